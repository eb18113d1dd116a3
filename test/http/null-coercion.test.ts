// The validator's type coercion turned 0, "" and false into null wherever an input may be null
// ("boot_order": 0 was stored as null, "iops": "" too), and null into 0 where the integer came
// first ("iops": null was stored as 0). Each such value is kept as sent or refused at its field.
import t, { type Test } from 'tap'
import { seedDrive } from '../servers/helpers.ts'
import { buildTestApp, client, createUser } from '../helpers/app.ts'

const { app } = await buildTestApp(t, { runWorkers: false })
const user = await createUser(app)
const api = client(app, user)
const one = (r: { json: () => any }) => { const j = r.json(); return j.objects?.[0] ?? j }

const drive = one(await api.post('/api/2.0/drives/', { name: 'n', size: 1048576, media: 'disk' }))
const base = { name: 's', cpu: 1000, mem: 536870912, vnc_password: 'pw' }
const nic = { model: 'virtio', ip_v4_conf: { conf: 'dhcp' } }

const refused = (t: Test, res: { statusCode: number, body: string, json: () => any }, point: string, what: string) => {
  t.equal(res.statusCode, 400, `${what}: ${res.statusCode} ${res.body.slice(0, 160)}`)
  t.equal(res.json()[0]?.error_type, 'validation', `${what}: validation`)
  t.equal(res.json()[0]?.error_point, point, `${what}: error_point`)
}

t.test('0, "" and false are not taken for null', async t => {
  for (const v of [0, '', false]) {
    const V = JSON.stringify(v)
    const mountable = await seedDrive(app, user.id)
    refused(t, await api.post('/api/2.0/servers/', { ...base, drives: [{ device: 'virtio', dev_channel: '0:0', drive: mountable, boot_order: v }] }), 'boot_order', `mount boot_order ${V}`)
    refused(t, await api.post('/api/2.0/servers/', { ...base, nics: [{ ...nic, boot_order: v }] }), 'boot_order', `nic boot_order ${V}`)
    refused(t, await api.post('/api/2.0/servers/', { ...base, cpu_model: v }), 'cpu_model', `cpu_model ${V}`)
    refused(t, await api.post('/api/2.0/servers/', { ...base, nics: [{ ...nic, ip_v6_conf: v }] }), 'ip_v6_conf', `ip_v6_conf ${V}`)
    refused(t, await api.post('/api/2.0/servers/', { ...base, nics: [{ model: 'virtio', ip_v4_conf: v }] }), 'ip_v4_conf', `ip_v4_conf ${V}`)
    for (const field of ['vlan', 'firewall_policy']) {
      t.equal((await api.post('/api/2.0/servers/', { ...base, nics: [{ ...nic, [field]: v }] })).statusCode, 400, `${field} ${V}`)
    }
    t.equal((await api.post('/api/2.0/servers/', { ...base, nics: [{ model: 'virtio', ip_v4_conf: { conf: 'dhcp', ip: v } }] })).statusCode, 400, `ip_v4_conf.ip ${V}`)
  }
  for (const v of ['', false]) {
    refused(t, await api.post('/api/2.0/drives/', { name: 'x', size: 1048576, media: 'disk', iops: v }), 'iops', `create iops ${JSON.stringify(v)}`)
    refused(t, await api.put(`/api/2.0/drives/${drive.uuid}/`, { name: 'n', size: 1048576, media: 'disk', iops: v }), 'iops', `update iops ${JSON.stringify(v)}`)
  }
  t.equal(one(await api.get(`/api/2.0/drives/${drive.uuid}/`)).iops, null, 'the drive kept its iops')
})

t.test('iops 0 is 0; null is null, not 0', async t => {
  const zero = await api.post('/api/2.0/drives/', { name: 'z', size: 1048576, media: 'disk', iops: 0 })
  t.equal(zero.statusCode, 201)
  t.equal(one(zero).iops, 0)
  const nul = await api.post('/api/2.0/drives/', { name: 'n', size: 1048576, media: 'disk', iops: null })
  t.equal(nul.statusCode, 201)
  t.equal(one(nul).iops, null, 'created with iops null')
  t.equal(one(await api.put(`/api/2.0/drives/${one(zero).uuid}/`, { name: 'z', size: 1048576, media: 'disk', iops: null })).iops, null, 'updated to iops null')
  t.equal(one(await api.put(`/api/2.0/drives/${one(nul).uuid}/`, { name: 'n', size: 1048576, media: 'disk', iops: '0' })).iops, 0, 'decimal text 0 is 0')
})

t.test('null is still taken everywhere, and a GET sent back whole is accepted', async t => {
  const mountable = await seedDrive(app, user.id)
  const res = await api.post('/api/2.0/servers/', {
    ...base,
    cpu_model: null,
    drives: [{ device: 'virtio', dev_channel: '0:0', drive: mountable, boot_order: null }],
    nics: [{ ...nic, boot_order: null, vlan: null, firewall_policy: null, ip_v6_conf: null }, { model: 'virtio', ip_v4_conf: { conf: 'dhcp', ip: null } }]
  })
  t.equal(res.statusCode, 201, res.body.slice(0, 200))
  const server = one(res)
  t.equal(server.cpu_model, null)
  t.equal(server.drives[0].boot_order, null)
  t.equal(server.nics[0].boot_order, null)
  const full = one(await api.get(`/api/2.0/servers/${server.uuid}/`))
  const echoed = await api.put(`/api/2.0/servers/${server.uuid}/`, { ...full, name: 'echoed' })
  t.equal(echoed.statusCode, 200, echoed.body.slice(0, 200))
  t.equal(one(echoed).drives[0].boot_order, null)
  const d = one(await api.get(`/api/2.0/drives/${drive.uuid}/`))
  const echoedDrive = await api.put(`/api/2.0/drives/${drive.uuid}/`, { ...d, name: 'echoed' })
  t.equal(echoedDrive.statusCode, 200, echoedDrive.body.slice(0, 200))
  t.equal(one(echoedDrive).iops, null, 'iops null echoed back stays null')
})
