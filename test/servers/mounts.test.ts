// Drive mounts (§3.1, §2.12): attaching makes drives mounted and lists the server in mounted_on,
// detaching and deleting make them unmounted; multimount, readiness and ownership rules; recursive deletes.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import fs from 'node:fs'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { MINIMAL, driveStatus, seedDrive } from './helpers.ts'

const { app } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const bob = await createUser(app)
const api = client(app, alice)

const mount = (drive: unknown, devChannel = '0:0', device = 'virtio', bootOrder?: number) =>
  ({ device, dev_channel: devChannel, drive, ...(bootOrder ? { boot_order: bootOrder } : {}) })

async function createServer (drives: unknown[] = [], extra: Record<string, unknown> = {}) {
  const res = await api.post('/api/2.0/servers/', { ...MINIMAL, drives, ...extra })
  if (res.statusCode !== 201) throw new Error(`${res.statusCode} ${res.body}`)
  return res.json().objects[0]
}

async function mountedOn (driveId: string): Promise<string[]> {
  const res = await api.get(`/api/2.0/drives/${driveId}/`)
  return res.json().mounted_on.map((r: { uuid: string }) => r.uuid)
}

t.test('attach on create: uuid, URI and object forms; output shape; drives become mounted', async t => {
  const [a, b, c] = [await seedDrive(app, alice.id), await seedDrive(app, alice.id), await seedDrive(app, alice.id, { media: 'cdrom' })]
  const s = await createServer([mount(a, '0:0', 'virtio', 1), mount(`/api/2.0/drives/${b}/`, '0:1'), mount({ uuid: c, resource_uri: `/api/2.0/drives/${c}/` }, '0:0', 'ide', 2)])
  t.same(s.drives, [
    { boot_order: 1, dev_channel: '0:0', device: 'virtio', drive: { resource_uri: `/api/2.0/drives/${a}/`, uuid: a }, runtime: null },
    { boot_order: null, dev_channel: '0:1', device: 'virtio', drive: { resource_uri: `/api/2.0/drives/${b}/`, uuid: b }, runtime: null },
    { boot_order: 2, dev_channel: '0:0', device: 'ide', drive: { resource_uri: `/api/2.0/drives/${c}/`, uuid: c }, runtime: null }
  ], 'input order kept; virtio 0:0 and ide 0:0 together are fine')
  for (const d of [a, b, c]) {
    t.equal(await driveStatus(app, d), 'mounted')
    t.same(await mountedOn(d), [s.uuid])
    t.equal((await api.get(`/api/2.0/drives/${d}/`)).json().status, 'mounted', 'the drive resource shows mounted')
  }
})

t.test('PUT with a full drives list replaces the mounts; drives left out become unmounted', async t => {
  const [a, b, c] = [await seedDrive(app, alice.id), await seedDrive(app, alice.id), await seedDrive(app, alice.id)]
  const s = await createServer([mount(a, '0:0'), mount(b, '0:1')])
  const res = await api.put(`/api/2.0/servers/${s.uuid}/`, { ...MINIMAL, drives: [{ ...s.drives[1], dev_channel: '0:2' }, mount(c, '0:3')] })
  t.equal(res.statusCode, 200)
  t.same(res.json().drives.map((d: { drive: { uuid: string }, dev_channel: string }) => [d.drive.uuid, d.dev_channel]), [[b, '0:2'], [c, '0:3']], 'echoed mount objects accepted')
  t.equal(await driveStatus(app, a), 'unmounted')
  t.same(await mountedOn(a), [])
  t.equal(await driveStatus(app, b), 'mounted')
  t.equal(await driveStatus(app, c), 'mounted')
  const kept = await api.put(`/api/2.0/servers/${s.uuid}/`, { name: 'renamed' })
  t.equal(kept.json().drives.length, 2, 'a PUT without drives keeps the mounts')
  await api.put(`/api/2.0/servers/${s.uuid}/`, { drives: [] })
  t.equal(await driveStatus(app, b), 'unmounted')
  t.equal(await driveStatus(app, c), 'unmounted')
})

t.test('a disk mounts on one server unless allow_multimount; cdroms may be shared', async t => {
  const disk = await seedDrive(app, alice.id)
  const shared = await seedDrive(app, alice.id, { allowMultimount: true })
  const cdrom = await seedDrive(app, alice.id, { media: 'cdrom' })
  const one = await createServer([mount(disk), mount(shared, '0:1'), mount(cdrom, '0:0', 'ide')])
  const refused = await api.post('/api/2.0/servers/', { ...MINIMAL, drives: [mount(disk)] })
  t.equal(refused.statusCode, 400)
  t.equal(refused.json()[0].error_point, 'drives')
  t.match(refused.json()[0].error_message, /another server.*allow_multimount/)
  const other = await createServer()
  const viaPut = await api.put(`/api/2.0/servers/${other.uuid}/`, { drives: [mount(disk)] })
  t.equal(viaPut.statusCode, 400, 'also refused on PUT')
  t.same((await api.get(`/api/2.0/servers/${other.uuid}/`)).json().drives, [], 'nothing changed')
  const two = await createServer([mount(shared), mount(cdrom, '0:0', 'ide')])
  t.same((await mountedOn(shared)).sort(), [one.uuid, two.uuid].sort(), 'a multimount disk lists both servers')
  t.same((await mountedOn(cdrom)).sort(), [one.uuid, two.uuid].sort(), 'a cdrom is shared')
  // detaching from one server keeps it mounted while another still has it
  await api.put(`/api/2.0/servers/${two.uuid}/`, { drives: [] })
  t.equal(await driveStatus(app, shared), 'mounted')
  t.same(await mountedOn(shared), [one.uuid])
})

t.test('the same disk twice and the same slot twice are refused', async t => {
  const disk = await seedDrive(app, alice.id)
  const other = await seedDrive(app, alice.id)
  const twice = await api.post('/api/2.0/servers/', { ...MINIMAL, drives: [mount(disk, '0:0'), mount(disk, '0:1')] })
  t.equal(twice.statusCode, 400)
  t.equal(twice.json()[0].error_point, 'drives')
  const slot = await api.post('/api/2.0/servers/', { ...MINIMAL, drives: [mount(disk, '0:0'), mount(other, '0:0')] })
  t.equal(slot.statusCode, 400)
  t.match(slot.json()[0].error_message, /dev_channel 0:0/)
  const range = await api.post('/api/2.0/servers/', { ...MINIMAL, drives: [mount(disk, '2:0', 'ide')] })
  t.equal(range.statusCode, 400)
  const device = await api.post('/api/2.0/servers/', { ...MINIMAL, drives: [mount(disk, '0:0', 'floppy')] })
  t.equal(device.statusCode, 400)
  const format = await api.post('/api/2.0/servers/', { ...MINIMAL, drives: [mount(disk, 'zero')] })
  t.equal(format.statusCode, 400)
  t.equal(await driveStatus(app, disk), 'unmounted', 'nothing mounted by refused requests')
})

t.test('dev_channel is stored as controller:unit in plain decimal; one slot written two ways is a duplicate', async t => {
  const [disk, other, third] = [await seedDrive(app, alice.id), await seedDrive(app, alice.id), await seedDrive(app, alice.id)]
  const same = await api.post('/api/2.0/servers/', { ...MINIMAL, drives: [mount(disk, '00:01'), mount(other, '0:1')] })
  t.equal(same.statusCode, 400, '00:01 and 0:1 are one slot')
  t.match(same.json()[0], { error_type: 'validation', error_point: 'drives', error_message: /virtio dev_channel 0:1/ })
  t.equal(await driveStatus(app, disk), 'unmounted', 'nothing mounted')
  const s = await createServer([mount(disk, '00:01'), mount(other, '007:0', 'virtio'), mount(third, '01:01', 'ide')])
  t.same(s.drives.map((d: { dev_channel: string }) => d.dev_channel), ['0:1', '7:0', '1:1'], 'the answer shows the canonical form')
  t.same((await api.get(`/api/2.0/servers/${s.uuid}/`)).json().drives.map((d: { dev_channel: string }) => d.dev_channel), ['0:1', '7:0', '1:1'], 'and so does a GET')
  const viaPut = await api.put(`/api/2.0/servers/${s.uuid}/`, { drives: [mount(disk, '0:1'), mount(other, '0:01')] })
  t.equal(viaPut.statusCode, 400, 'also refused on PUT')
  t.match(viaPut.json()[0].error_message, /virtio dev_channel 0:1/)
  const put = await api.put(`/api/2.0/servers/${s.uuid}/`, { drives: [mount(disk, '0:02'), mount(other, '10:0')] })
  t.equal(put.statusCode, 200)
  t.same(put.json().drives.map((d: { dev_channel: string }) => d.dev_channel), ['0:2', '10:0'], 'PUT stores the canonical form too')
})

t.test('the migration writes stored dev_channels canonically, except a slot two mounts hold', async t => {
  const [a, b, c, d] = [await seedDrive(app, alice.id), await seedDrive(app, alice.id), await seedDrive(app, alice.id), await seedDrive(app, alice.id, { media: 'cdrom' })]
  const s = await createServer()
  // as the API stored them before: the form given, and one slot twice in two forms
  await app.prisma.serverDrive.createMany({
    data: [[a, 'virtio', '00:01'], [b, 'virtio', '0:2'], [c, 'virtio', '00:02'], [d, 'ide', '01:01']]
      .map(([driveId, device, devChannel], position) => ({ serverId: s.uuid, driveId, device, devChannel, position }))
  })
  const sql = fs.readFileSync(new URL('../../prisma/migrations/20261205100000_dev_channel_canonical/migration.sql', import.meta.url), 'utf8')
  t.equal(await app.prisma.$executeRawUnsafe(sql), 2)
  t.same((await api.get(`/api/2.0/servers/${s.uuid}/`)).json().drives.map((m: { dev_channel: string }) => m.dev_channel), ['0:1', '0:2', '00:02', '1:1'])
})

t.test('drives that are not ready cannot be mounted; cloning_src can', async t => {
  for (const status of ['creating', 'cloning_dst', 'resizing', 'uploading', 'unavailable']) {
    const d = await seedDrive(app, alice.id, { status })
    const res = await api.post('/api/2.0/servers/', { ...MINIMAL, drives: [mount(d)] })
    t.equal(res.statusCode, 400, status)
    t.equal(res.json()[0].error_point, 'drives')
    t.match(res.json()[0].error_message, new RegExp(`${d}.*${status}`))
    t.equal(await driveStatus(app, d), status, 'status unchanged')
  }
  const reading = await seedDrive(app, alice.id, { readers: 1 })
  const s = await createServer([mount(reading)])
  t.equal(s.drives.length, 1, 'a drive being cloned (cloning_src) can be mounted')
  t.equal(await driveStatus(app, reading), 'mounted')
  t.equal((await api.get(`/api/2.0/drives/${reading}/`)).json().status, 'cloning_src', 'and still shows cloning_src')
  // a drive already on the server is kept by a PUT even when it has become busy meanwhile
  await app.prisma.drive.update({ where: { id: reading }, data: { status: 'resizing', readers: 0 } })
  const put = await api.put(`/api/2.0/servers/${s.uuid}/`, { drives: s.drives, name: 'kept' })
  t.equal(put.statusCode, 200)
  t.equal(put.json().drives.length, 1)
  t.equal(await driveStatus(app, reading), 'resizing', 'a job-held drive keeps its status')
})

t.test('a drive of another account reads as missing, and nothing changes', async t => {
  const bobs = await seedDrive(app, bob.id)
  const mine = await seedDrive(app, alice.id)
  const missing = randomUUID()
  const answers = []
  for (const d of [bobs, missing]) {
    const res = await api.post('/api/2.0/servers/', { ...MINIMAL, drives: [mount(mine, '0:0'), mount(d, '0:1')] })
    t.equal(res.statusCode, 400)
    answers.push(res.json()[0].error_message.replace(d, 'X'))
    t.same(res.json()[0], { error_type: 'validation', error_message: `Drive ${d} does not exist`, error_point: 'drives' })
  }
  t.equal(answers[0], answers[1], 'another account\'s drive and a missing one get the same answer')
  t.equal(await driveStatus(app, bobs), 'unmounted')
  t.equal(await driveStatus(app, mine), 'unmounted', 'the valid drive of the same request was not mounted')
  t.equal(await app.prisma.serverDrive.count({ where: { driveId: { in: [bobs, mine] } } }), 0)
})

t.test('deleting a server detaches its drives: they become unmounted', async t => {
  const [a, c] = [await seedDrive(app, alice.id), await seedDrive(app, alice.id, { media: 'cdrom' })]
  const s = await createServer([mount(a), mount(c, '0:0', 'ide')])
  t.equal((await api.delete(`/api/2.0/servers/${s.uuid}/`)).statusCode, 204)
  for (const d of [a, c]) {
    t.equal(await driveStatus(app, d), 'unmounted')
    t.same(await mountedOn(d), [])
  }
})

t.test('?recurse= deletes the server and the selected drives', async t => {
  for (const [recurse, gone] of [['all_drives', ['disk', 'cdrom']], ['disks', ['disk']], ['cdroms', ['cdrom']]] as const) {
    const disk = await seedDrive(app, alice.id)
    const cdrom = await seedDrive(app, alice.id, { media: 'cdrom' })
    const s = await createServer([mount(disk), mount(cdrom, '0:0', 'ide')])
    const res = await api.delete(`/api/2.0/servers/${s.uuid}/?recurse=${recurse}`)
    t.equal(res.statusCode, 204, recurse)
    t.equal((await api.get(`/api/2.0/servers/${s.uuid}/`)).statusCode, 404)
    for (const [media, id] of [['disk', disk], ['cdrom', cdrom]] as const) {
      const get = await api.get(`/api/2.0/drives/${id}/`)
      if ((gone as readonly string[]).includes(media)) {
        t.equal(get.statusCode, 404, `${recurse}: the ${media} is deleted`)
        t.equal(await app.prisma.job.count({ where: { operation: 'drive_delete', links: { some: { resourceId: id } } } }), 1, 'through a drive_delete job')
      } else {
        t.equal(get.statusCode, 200, `${recurse}: the ${media} stays`)
        t.equal(get.json().status, 'unmounted')
      }
    }
  }
})

t.test('?recurse= deletes a selected drive shared with another stopped server, detaching it there', async t => {
  const cdrom = await seedDrive(app, alice.id, { media: 'cdrom' })
  const disk = await seedDrive(app, alice.id)
  const s1 = await createServer([mount(disk), mount(cdrom, '0:0', 'ide')])
  const s2 = await createServer([mount(cdrom, '0:0', 'ide')])
  t.equal((await api.delete(`/api/2.0/servers/${s1.uuid}/?recurse=all_drives`)).statusCode, 204)
  for (const id of [cdrom, disk]) t.equal((await api.get(`/api/2.0/drives/${id}/`)).statusCode, 404, 'every selected drive is deleted')
  t.equal(await app.prisma.job.count({ where: { operation: 'drive_delete', links: { some: { resourceId: cdrom } } } }), 1, 'through a drive_delete job')
  const other = (await api.get(`/api/2.0/servers/${s2.uuid}/`)).json()
  t.same(other.drives, [], 'the shared cdrom is detached from the stopped clone')
  t.equal(await app.prisma.serverDrive.count({ where: { driveId: cdrom } }), 0)
})

t.test('?recurse= with a selected drive on a running server refuses the whole request and changes nothing', async t => {
  const cdrom = await seedDrive(app, alice.id, { media: 'cdrom' })
  const disk = await seedDrive(app, alice.id)
  const s1 = await createServer([mount(disk), mount(cdrom, '0:0', 'ide')])
  const s2 = await createServer([mount(cdrom, '0:0', 'ide')])
  await app.prisma.server.update({ where: { id: s2.uuid }, data: { status: 'running', activeSince: new Date() } })
  const jobsBefore = await app.prisma.job.count()
  const res = await api.delete(`/api/2.0/servers/${s1.uuid}/?recurse=all_drives`)
  t.equal(res.statusCode, 400, res.body)
  t.equal(res.json()[0].error_type, 'validation')
  t.equal(res.json()[0].error_point, 'status')
  t.match(res.json()[0].error_message, cdrom)
  t.equal(await app.prisma.job.count(), jobsBefore, 'no drive_delete job, not even for the disk')
  const server = (await api.get(`/api/2.0/servers/${s1.uuid}/`)).json()
  t.same(server.drives.map((d: any) => d.drive.uuid), [disk, cdrom], 'the server and both mounts are still there')
  for (const id of [disk, cdrom]) {
    t.equal((await api.get(`/api/2.0/drives/${id}/`)).statusCode, 200)
    t.equal(await driveStatus(app, id), 'mounted')
  }
  t.same((await mountedOn(cdrom)).sort(), [s1.uuid, s2.uuid].sort(), 'the cdrom is still on both servers')
})

t.test('?recurse= with a busy drive refuses and changes nothing', async t => {
  const disk = await seedDrive(app, alice.id)
  const s = await createServer([mount(disk)])
  await app.prisma.drive.update({ where: { id: disk }, data: { status: 'resizing' } })
  const res = await api.delete(`/api/2.0/servers/${s.uuid}/?recurse=disks`)
  t.equal(res.statusCode, 503)
  t.equal(res.json()[0].error_type, 'concurrency')
  t.equal((await api.get(`/api/2.0/servers/${s.uuid}/`)).json().drives.length, 1, 'the server and its mount are still there')
})

t.test('an out-of-range boot_order or a bad NIC conf says what the field takes, not "must be null"', async t => {
  const disk = await seedDrive(app, alice.id)
  // (0 is taken as null: ajv's coerceTypes makes 0 null for the union's null branch)
  for (const bad of [-1, 2147483648, 'first']) {
    const res = await api.post('/api/2.0/servers/', { ...MINIMAL, drives: [{ ...mount(disk), boot_order: bad }] })
    t.equal(res.statusCode, 400, `boot_order ${JSON.stringify(bad)}`)
    t.same(res.json(), [{
      error_type: 'validation',
      error_message: 'Invalid field boot_order: must be null or an integer from 1 to 2147483647',
      error_point: 'boot_order'
    }], `boot_order ${JSON.stringify(bad)}`)
  }
  const nic = await api.post('/api/2.0/servers/', { ...MINIMAL, nics: [{ boot_order: -1 }] })
  t.equal(nic.json()[0].error_message, 'Invalid field boot_order: must be null or an integer from 1 to 2147483647', 'the same on a NIC')
  const conf = await api.post('/api/2.0/servers/', { ...MINIMAL, nics: [{ ip_v4_conf: { conf: 'bogus' } }] })
  t.equal(conf.statusCode, 400)
  t.equal(conf.json()[0].error_point, 'conf', 'a branch that matched the type (an object) is explained by its own error')
  t.match(conf.json()[0].error_message, /^Invalid field conf: must be equal to one of the allowed values/)
  t.equal(await app.prisma.server.count({ where: { ownerId: alice.id, name: MINIMAL.name, mounts: { some: { driveId: disk } } } }), 0, 'no server made')
})
