// Power actions (§3.2): start/stop/shutdown answered 202 and carried out by server_start and
// server_stop jobs through the hypervisor driver; the rules for running servers.
import t from 'tap'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import type { HypervisorDriver } from '../../src/hypervisor/driver.ts'
import { RecordingDriver } from '../../src/hypervisor/recording.ts'
import { MINIMAL, driveStatus, seedDrive } from './helpers.ts'

const { app } = await buildTestApp(t)
const alice = await createUser(app)
const api = client(app, alice)
const recording = app.hypervisor as RecordingDriver

async function createServer (extra: Record<string, unknown> = {}) {
  const res = await api.post('/api/2.0/servers/', { ...MINIMAL, ...extra })
  if (res.statusCode !== 201) throw new Error(`${res.statusCode} ${res.body}`)
  return res.json().objects[0]
}

const get = async (id: string) => (await api.get(`/api/2.0/servers/${id}/`)).json()
const action = (id: string, what: string, body?: unknown) => api.post(`/api/2.0/servers/${id}/action/?do=${what}`, body)
const reach = (id: string, status: string) => eventually(async () => { const s = await get(id); return s.status === status && s })

t.test('start: 202, starting while the job runs, then running with runtime', async t => {
  const disk = await seedDrive(app, alice.id)
  const s = await createServer({ drives: [{ device: 'virtio', dev_channel: '0:0', drive: disk }], nics: [{ ip_v4_conf: { conf: 'static', ip: '10.1.2.3' } }] })
  recording.delayMs = 2000
  t.teardown(() => { recording.delayMs = 0 })
  const res = await action(s.uuid, 'start')
  t.equal(res.statusCode, 202)
  t.same(res.json(), { action: 'start', result: 'success', uuid: s.uuid })
  const during = await get(s.uuid)
  t.equal(during.status, 'starting')
  t.equal(during.runtime, null)
  t.equal(during.jobs.length, 1)
  const again = await action(s.uuid, 'start')
  t.equal(again.statusCode, 503, 'a second start while starting is busy')
  t.equal(again.json()[0].error_type, 'concurrency')
  t.equal((await api.delete(`/api/2.0/servers/${s.uuid}/`)).statusCode, 503, 'no delete while starting')

  const running = await reach(s.uuid, 'running')
  t.match(running.runtime.active_since, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$/)
  t.same(running.runtime.nics, [{
    interface_type: 'public',
    io: { bytes_recv: 0, bytes_sent: 0, packets_recv: 0, packets_sent: 0 },
    ip_v4: { resource_uri: '/api/2.0/ips/10.1.2.3/', uuid: '10.1.2.3' },
    ip_v6: null,
    mac: s.nics[0].mac
  }])
  t.match(running.nics[0].runtime, { interface_type: 'public', ip_v4: { uuid: '10.1.2.3' } })
  t.match(running.drives[0].runtime, { io: { bytes_read: 0 } })
  t.equal(recording.guests.get(s.uuid)?.state, 'running', 'the driver recorded the start')
  const job = await eventually(async () => { const j = (await api.get(running.jobs[0].resource_uri)).json(); return j.finished_at && j })
  t.match(job, { operation: 'server_start', state: 'success', resources: [`/api/2.0/servers/${s.uuid}/`] })
  t.equal(job.data.description, `started ${s.name}`, 'the finished job says what was done')
  t.equal(job.data.progress, 100)
  t.equal(await driveStatus(app, disk), 'mounted')

  // short list shows runtime too
  const listed = (await api.get(`/api/2.0/servers/?uuid=${s.uuid}`)).json().objects[0]
  t.equal(listed.status, 'running')
  t.equal(listed.runtime.active_since, running.runtime.active_since)
})

t.test('actions that make no sense in the current status are 400 at status', async t => {
  const s = await createServer()
  for (const what of ['stop', 'shutdown']) {
    const res = await action(s.uuid, what)
    t.equal(res.statusCode, 400, `${what} on a stopped server`)
    t.same(res.json()[0].error_point, 'status')
    t.match(res.json()[0].error_message, /stopped/)
  }
  t.equal((await action(s.uuid, 'start')).statusCode, 202)
  await reach(s.uuid, 'running')
  const res = await action(s.uuid, 'start')
  t.equal(res.statusCode, 400, 'start on a running server')
  t.equal(res.json()[0].error_point, 'status')
  t.equal((await get(s.uuid)).jobs.length, 1, 'no job for a refused action')
})

t.test('stop and shutdown: running → stopping → stopped, runtime back to null', async t => {
  for (const what of ['stop', 'shutdown']) {
    const s = await createServer()
    await action(s.uuid, 'start')
    await reach(s.uuid, 'running')
    recording.delayMs = 300
    const res = await action(s.uuid, what)
    t.equal(res.statusCode, 202)
    t.same(res.json(), { action: what, result: 'success', uuid: s.uuid })
    t.equal((await get(s.uuid)).status, 'stopping')
    recording.delayMs = 0
    const stopped = await reach(s.uuid, 'stopped')
    t.equal(stopped.runtime, null)
    t.equal(stopped.nics.length, 0)
    // the job row is finished just after the server is released
    const ops = await eventually(async () => {
      const rows = await app.prisma.job.findMany({ where: { links: { some: { resourceId: s.uuid } } }, orderBy: { created: 'asc' } })
      return rows.every(j => j.finishedAt) && rows
    })
    t.same(ops.map(j => [j.operation, j.state]), [['server_start', 'success'], ['server_stop', 'success']])
    t.same(ops.map(j => j.description), [`started ${s.name}`, `${what === 'stop' ? 'stopped' : 'shut down'} ${s.name}`], 'each finished job says what was done')
    t.equal(recording.guests.get(s.uuid)?.state, 'stopped')
    const row = await app.prisma.server.findUnique({ where: { id: s.uuid } })
    t.equal(row?.activeSince, null)
    t.equal(row?.lockedByJob, null)
  }
})

t.test('actions accept an empty body with Content-Type: application/json (Go SDK)', async t => {
  const s = await createServer()
  const res = await api.raw('POST', `/api/2.0/servers/${s.uuid}/action/?do=start`, '', { 'content-type': 'application/json' })
  t.equal(res.statusCode, 202)
  await reach(s.uuid, 'running')
  t.equal((await action(s.uuid, 'stop', {})).statusCode, 202)
  await reach(s.uuid, 'stopped')
})

t.test('avoid is validated on start', async t => {
  const s = await createServer()
  const bad = await api.post(`/api/2.0/servers/${s.uuid}/action/?do=start&avoid=nope`)
  t.equal(bad.statusCode, 400)
  t.equal(bad.json()[0].error_point, 'avoid')
  t.equal((await get(s.uuid)).status, 'stopped')
  const other = await createServer()
  t.equal((await api.post(`/api/2.0/servers/${s.uuid}/action/?do=start&avoid=${other.uuid}`)).statusCode, 202)
  await reach(s.uuid, 'running')
})

t.test('a server does not start with drives that are not ready', async t => {
  const busy = await seedDrive(app, alice.id)
  const broken = await seedDrive(app, alice.id)
  const s1 = await createServer({ drives: [{ device: 'virtio', dev_channel: '0:0', drive: busy }] })
  const s2 = await createServer({ drives: [{ device: 'virtio', dev_channel: '0:0', drive: broken }] })
  await app.prisma.drive.update({ where: { id: busy }, data: { status: 'cloning_dst' } })
  await app.prisma.drive.update({ where: { id: broken }, data: { status: 'unavailable' } })
  const r1 = await action(s1.uuid, 'start')
  t.equal(r1.statusCode, 503, 'a drive a job holds: retry later')
  t.match(r1.json()[0], { error_type: 'concurrency', error_point: 'drives' })
  t.match(r1.json()[0].error_message, busy)
  const r2 = await action(s2.uuid, 'start')
  t.equal(r2.statusCode, 400, 'an unavailable drive')
  t.equal(r2.json()[0].error_point, 'drives')
  for (const s of [s1, s2]) t.equal((await get(s.uuid)).status, 'stopped')
  await app.prisma.drive.update({ where: { id: busy }, data: { status: 'mounted' } })
  t.equal((await action(s1.uuid, 'start')).statusCode, 202, 'starts once the drive is ready')
  await reach(s1.uuid, 'running')
})

t.test('a running server: PUT applies only name, meta and tags; delete is refused', async t => {
  const disk = await seedDrive(app, alice.id)
  const other = await seedDrive(app, alice.id)
  const s = await createServer({ drives: [{ device: 'virtio', dev_channel: '0:0', drive: disk }] })
  await action(s.uuid, 'start')
  await reach(s.uuid, 'running')
  const res = await api.put(`/api/2.0/servers/${s.uuid}/`, {
    name: 'live', meta: { k: 'v' }, tags: [alice.id], cpu: 3000, mem: 1073741824, vnc_password: 'changed', drives: [{ device: 'virtio', dev_channel: '0:0', drive: other }], nics: [{ ip_v4_conf: { conf: 'dhcp' } }]
  })
  t.equal(res.statusCode, 200)
  const u = res.json()
  t.match(u, { name: 'live', meta: { k: 'v' }, cpu: MINIMAL.cpu, mem: MINIMAL.mem, vnc_password: 'secret', status: 'running' })
  t.equal(u.tags[0].uuid, alice.id)
  t.same(u.drives.map((d: { drive: { uuid: string } }) => d.drive.uuid), [disk], 'drives unchanged')
  t.same(u.nics, [], 'nics unchanged')
  t.equal(await driveStatus(app, other), 'unmounted')

  const del = await api.delete(`/api/2.0/servers/${s.uuid}/?recurse=all_drives`)
  t.equal(del.statusCode, 400)
  t.equal(del.json()[0].error_point, 'status')
  t.equal((await get(s.uuid)).status, 'running')
  t.equal(await driveStatus(app, disk), 'mounted', 'the drive is neither deleted nor detached')

  await action(s.uuid, 'stop')
  await reach(s.uuid, 'stopped')
  t.equal((await api.delete(`/api/2.0/servers/${s.uuid}/?recurse=disks`)).statusCode, 204, 'deletable once stopped')
  await eventually(async () => (await api.get(`/api/2.0/drives/${disk}/`)).statusCode === 404)
  t.pass('the disk is deleted by its drive_delete job')
})

t.test('a failing driver fails the job and puts the server back', async t => {
  const s = await createServer()
  const failing: HypervisorDriver = {
    ...recording,
    name: 'failing',
    start: async () => { throw new Error('no capacity') },
    stop: recording.stop.bind(recording),
    shutdown: async () => false,
    openVnc: recording.openVnc.bind(recording),
    closeVnc: recording.closeVnc.bind(recording)
  }
  app.hypervisor = failing
  t.teardown(() => { app.hypervisor = recording })
  t.equal((await action(s.uuid, 'start')).statusCode, 202)
  const job = await eventually(async () => {
    const j = await app.prisma.job.findFirst({ where: { operation: 'server_start', links: { some: { resourceId: s.uuid } } } })
    return j && ['error', 'success'].includes(j.state) ? j : undefined
  })
  t.equal(job.state, 'error')
  const back = await reach(s.uuid, 'stopped')
  t.equal(back.runtime, null)
  t.equal((await app.prisma.server.findUnique({ where: { id: s.uuid } }))?.lockedByJob, null)

  // a shutdown the guest ignores leaves the server running
  app.hypervisor = recording
  await action(s.uuid, 'start')
  await reach(s.uuid, 'running')
  app.hypervisor = failing
  t.equal((await action(s.uuid, 'shutdown')).statusCode, 202)
  await eventually(async () => (await app.prisma.job.count({ where: { operation: 'server_stop', state: 'success', links: { some: { resourceId: s.uuid } } } })) === 1)
  t.equal((await get(s.uuid)).status, 'running', 'the guest did not power off')
  const ignored = await app.prisma.job.findFirstOrThrow({ where: { operation: 'server_stop', links: { some: { resourceId: s.uuid } } } })
  t.match(ignored.description, /still running: the guest did not power off/, 'and its job says so')
})

t.test('open_vnc and close_vnc on a running server', async t => {
  const s = await createServer()
  const refused = await action(s.uuid, 'open_vnc')
  t.equal(refused.statusCode, 400)
  t.equal(refused.json()[0].error_point, 'status')
  await action(s.uuid, 'start')
  await reach(s.uuid, 'running')
  const open = await action(s.uuid, 'open_vnc')
  t.equal(open.statusCode, 202)
  t.match(open.json(), { action: 'open_vnc', result: 'success', uuid: s.uuid, vnc_url: /^vnc:\/\/[^:]+:\d+$/ })
  t.equal(recording.guests.get(s.uuid)?.vnc, true)
  t.same((await action(s.uuid, 'close_vnc')).json(), { action: 'close_vnc', result: 'success', uuid: s.uuid })
  t.equal(recording.guests.get(s.uuid)?.vnc, false)
})

t.test('other features add actions to app.actions.server', async t => {
  app.actions.server.register('test_echo', {
    summary: 'echo for tests',
    run: async ({ uuid, body }) => ({ uuid, body })
  })
  t.throws(() => app.actions.server.register('start', { summary: 'x', run: async () => ({}) }), /registered already/)
  const s = await createServer()
  const res = await action(s.uuid, 'test_echo', { a: 1 })
  t.equal(res.statusCode, 202, 'actions answer 202 unless they say otherwise')
  t.same(res.json(), { uuid: s.uuid, body: { a: 1 } })
})

t.test("one lockOwnedServer: start, stop, clone, update and delete of an unknown or another account's server give the same 404", async t => {
  const bob = await createUser(app)
  const bobs = (await client(app, bob).post('/api/2.0/servers/', MINIMAL)).json().objects[0]
  for (const id of ['00000000-0000-4000-8000-000000000000', bobs.uuid]) {
    const expected = [{ error_type: 'notexist', error_message: `Server ${id} does not exist`, error_point: 'uuid' }]
    for (const what of ['start', 'stop', 'clone']) {
      const res = await action(id, what, {})
      t.equal(res.statusCode, 404, `${what} ${id}`)
      t.same(res.json(), expected, `${what}: the one message`)
    }
    for (const res of [await api.delete(`/api/2.0/servers/${id}/`), await api.put(`/api/2.0/servers/${id}/`, { name: 'mine now' })]) {
      t.equal(res.statusCode, 404)
      t.same(res.json(), expected, 'delete and update: the one message')
    }
  }
  t.match((await client(app, bob).get(`/api/2.0/servers/${bobs.uuid}/`)).json(), { name: MINIMAL.name, status: 'stopped' }, "bob's server is untouched")
})
