// Server clone end to end (§3.5): the bare new server in the 202, one server_clone job with one
// drive_clone child per disk, cdroms shared, data byte for byte, the byte-weighted roll-up, the
// parallelism limit, and a child failing: nothing half-made, every drive back to its status.
import t from 'tap'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { MiB, driveStatus, finishedJob, finishedTree, getJob, readyDrive, sha256, writeRandom } from './helpers.ts'

// one child at a time, so the limit shows in the children's start and finish times
const { app } = await buildTestApp(t, { config: { cloneParallelism: 1 } })
const alice = await createUser(app)
const api = client(app, alice)

async function sourceServer (name: string) {
  const root = await readyDrive(api, { name: `${name}-root`, size: 32 * MiB })
  const data = await readyDrive(api, { name: `${name}-data`, size: 48 * MiB })
  const iso = await readyDrive(api, { name: `${name}-iso`, size: 4 * MiB, media: 'cdrom' })
  await writeRandom(app, root.uuid, 0, 2 * MiB)
  await writeRandom(app, data.uuid, 10 * MiB, 5 * MiB)
  const res = await api.post('/api/2.0/servers/', {
    name,
    cpu: 1000,
    mem: 536870912,
    vnc_password: 'secret',
    meta: { role: 'web' },
    nics: [{ ip_v4_conf: { conf: 'static', ip: '10.0.0.5' }, model: 'virtio' }],
    drives: [
      { device: 'virtio', dev_channel: '0:0', drive: root.uuid, boot_order: 1 },
      { device: 'ide', dev_channel: '0:1', drive: iso.uuid },
      // stored, and so cloned, as 0:1
      { device: 'virtio', dev_channel: '00:01', drive: data.uuid, boot_order: 2 }
    ]
  })
  if (res.statusCode !== 201) throw new Error(`server create: ${res.statusCode} ${res.body}`)
  return { server: res.json().objects[0], root, data, iso }
}

t.test('server clone: 202 bare stopped server, disks cloned as children, cdrom shared, roll-up, data identical', async t => {
  const { server, root, data, iso } = await sourceServer('web')
  const res = await api.post(`/api/2.0/servers/${server.uuid}/action/?do=clone`, {})
  t.equal(res.statusCode, 202, res.body)
  const copy = res.json()
  t.notOk('objects' in copy, 'a bare server object')
  t.not(copy.uuid, server.uuid)
  t.equal(copy.status, 'stopped')
  t.equal(copy.runtime, null)
  t.equal(copy.name, 'web')
  t.equal(copy.vnc_password, 'secret')
  t.same(copy.meta, { role: 'web' })
  t.equal(copy.cpu, 1000)
  t.equal(copy.nics.length, 1)
  t.not(copy.nics[0].mac, server.nics[0].mac, 'a new MAC')
  t.same(copy.nics[0].ip_v4_conf, { conf: 'dhcp', ip: null }, 'IPs become DHCP')
  t.same(copy.drives.map((d: any) => [d.device, d.dev_channel, d.boot_order]), [['virtio', '0:0', 1], ['ide', '0:1', null], ['virtio', '0:1', 2]])
  const [newRoot, cd, newData] = copy.drives.map((d: any) => d.drive.uuid)
  t.equal(cd, iso.uuid, 'the cdrom is shared, not copied')
  t.not(newRoot, root.uuid)
  t.not(newData, data.uuid)
  t.equal(copy.jobs.length, 1)
  const jobId = copy.jobs[0].uuid
  for (const id of [newRoot, newData]) t.equal(await driveStatus(api, id), 'cloning_dst')

  const job = await finishedTree(api, jobId)
  t.equal(job.operation, 'server_clone')
  t.equal(job.state, 'success', JSON.stringify(job.error))
  t.equal(job.data.description, `cloned server ${server.uuid} as ${copy.uuid} (2 disks)`, 'the finished job says what was done')
  t.same(job.resources, [`/api/2.0/servers/${copy.uuid}/`], 'the source server is not held (only its disks are, by the children)')
  t.equal(job.children.length, 2, 'one drive_clone per disk')
  t.same(job.children.map((c: any) => c.operation), ['drive_clone', 'drive_clone'])
  t.same(job.children.map((c: any) => c.state), ['success', 'success'])
  t.equal(job.data.progress, 100)
  const sum = job.children.reduce((s: number, c: any) => s + c.data.bytes_total, 0)
  t.ok(sum >= 7 * MiB, `children copied ${sum} bytes`)
  t.equal(job.data.bytes_total, sum, 'the parent total is the sum of its children')
  t.equal(job.data.bytes_done, sum)

  // parallelism 1: the child that started second started only after the first one's copy was
  // complete (siblings are created together, so list order says nothing about run order)
  const [a, b] = [...job.children].sort((x: any, y: any) => Date.parse(x.started_at) - Date.parse(y.started_at))
  t.ok(Date.parse(b.started_at) >= Date.parse(a.result.copied_at), 'children ran one at a time (CLONE_PARALLELISM=1)')

  t.equal(await driveStatus(api, newRoot), 'mounted', 'cloned disks end mounted')
  t.equal(await driveStatus(api, newData), 'mounted')
  for (const d of [root, data, iso]) t.equal(await driveStatus(api, d.uuid), 'mounted', `source ${d.name} back to mounted`)
  t.equal(await sha256(app, newRoot), await sha256(app, root.uuid))
  t.equal(await sha256(app, newData), await sha256(app, data.uuid))
  const isoNow = (await api.get(`/api/2.0/drives/${iso.uuid}/`)).json()
  t.same(isoNow.mounted_on.map((m: any) => m.uuid).sort(), [server.uuid, copy.uuid].sort(), 'the cdrom is on both servers')
  const names = await Promise.all([newRoot, newData].map(async id => (await api.get(`/api/2.0/drives/${id}/`)).json().name))
  t.same(names, ['web-root', 'web-data'], 'NONE naming keeps the disk names')
  const after = (await api.get(`/api/2.0/servers/${copy.uuid}/`)).json()
  t.same(after.jobs.map((j: any) => j.uuid), [jobId])
  // the new server is a normal server now: it can be started
  t.equal((await api.post(`/api/2.0/servers/${copy.uuid}/action/?do=start`, {})).statusCode, 202)
})

t.test('server clone with a name, random_vnc_password and COUNTER naming for the disks', async t => {
  const { server } = await sourceServer('db_7')
  await api.put('/api/2.0/profile/', { clone_naming: 'COUNTER' })
  t.teardown(() => api.put('/api/2.0/profile/', { clone_naming: 'NONE' }))
  const res = await api.post(`/api/2.0/servers/${server.uuid}/action/?do=clone`, { random_vnc_password: true })
  t.equal(res.statusCode, 202)
  const copy = res.json()
  t.equal(copy.name, 'db_8')
  t.match(copy.vnc_password, /^[A-Za-z0-9]{8}$/)
  t.not(copy.vnc_password, 'secret')
  const job = await finishedJob(api, copy.jobs[0].uuid)
  t.equal(job.state, 'success')
  const disks = await Promise.all([copy.drives[0], copy.drives[2]].map(async (m: any) => (await api.get(`/api/2.0/drives/${m.drive.uuid}/`)).json().name))
  t.same(disks, ['db_7-root_1', 'db_7-data_1'])
  const named = await api.post(`/api/2.0/servers/${server.uuid}/action/?do=clone&avoid=${server.uuid}`, { name: 'explicit' })
  t.equal(named.json().name, 'explicit')
  await finishedJob(api, named.json().jobs[0].uuid)
  const bad = await api.post(`/api/2.0/servers/${server.uuid}/action/?do=clone&avoid=zzz`, {})
  t.equal(bad.statusCode, 400)
  t.equal(bad.json()[0].error_point, 'avoid')
  const other = await client(app, await createUser(app)).post(`/api/2.0/servers/${server.uuid}/action/?do=clone`, {})
  t.equal(other.statusCode, 404, 'another account cannot clone it')
})

t.test('a child failing midway: job error says why, new server and every new drive removed, sources as they were', async t => {
  const { server, root, data, iso } = await sourceServer('broken')
  // the data disk's image disappears: its drive_clone fails when it runs
  await app.storage.delete(data.uuid)
  const before = await app.prisma.drive.count()
  const res = await api.post(`/api/2.0/servers/${server.uuid}/action/?do=clone`, {})
  t.equal(res.statusCode, 202)
  const copy = res.json()
  const job = await finishedJob(api, copy.jobs[0].uuid)
  t.equal(job.state, 'error')
  t.match(job.error, { error_type: 'backend', error_message: new RegExp(`data of source drive ${data.uuid} is missing`) })
  const failed = job.children.find((c: any) => c.state === 'error')
  t.ok(failed, 'the failing child is in error')
  t.match(failed.error.error_message, /is missing/)
  t.equal((await api.get(`/api/2.0/servers/${copy.uuid}/`)).statusCode, 404, 'the new server is gone')
  for (const m of copy.drives) {
    if (m.drive.uuid === iso.uuid) continue
    t.equal((await api.get(`/api/2.0/drives/${m.drive.uuid}/`)).statusCode, 404, 'the new disk is gone')
    t.equal(await app.storage.exists(m.drive.uuid), false, 'and its image')
  }
  t.equal(await app.prisma.drive.count(), before, 'no drive rows left behind')
  t.equal(await driveStatus(api, root.uuid), 'mounted')
  t.equal(await driveStatus(api, data.uuid), 'mounted')
  t.equal(await driveStatus(api, iso.uuid), 'mounted', 'the cdrom is still on the source server')
  const rows = await app.prisma.drive.findMany({ where: { id: { in: [root.uuid, data.uuid, iso.uuid] } } })
  t.same(rows.map(r => r.readers), [0, 0, 0], 'every reader was given back')
  const isoNow = (await api.get(`/api/2.0/drives/${iso.uuid}/`)).json()
  t.same(isoNow.mounted_on.map((m: any) => m.uuid), [server.uuid])
  t.ok((await getJob(api, copy.jobs[0].uuid)).children.length === 2)
})
