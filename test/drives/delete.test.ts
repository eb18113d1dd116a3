// DELETE /drives/{uuid}/ and bulk DELETE /drives/ (§2.8): 204, then 404 and the image gone; all
// or nothing; drives on stopped servers are detached; busy and running-server drives refused.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { attachToServer, createDrive, finishJobsOf, readyDrive, waitGone } from './helpers.ts'

const { app } = await buildTestApp(t)
const alice = await createUser(app)
const bob = await createUser(app)
const api = client(app, alice)
const url = (d: { uuid: string }) => `/api/2.0/drives/${d.uuid}/`

t.test('DELETE answers 204 with no body; the drive and its image are gone shortly after', async t => {
  const d = await readyDrive(api, { name: 'doomed' })
  t.ok(await app.storage.exists(d.uuid))
  const res = await api.delete(url(d))
  t.equal(res.statusCode, 204)
  t.equal(res.body, '')
  await waitGone(api, d.uuid)
  await eventually(async () => (await app.prisma.drive.findUnique({ where: { id: d.uuid } })) === null)
  t.notOk(await app.storage.exists(d.uuid), 'the image is removed')
  const job = await app.prisma.job.findFirstOrThrow({ where: { operation: 'drive_delete', links: { some: { resourceId: d.uuid } } } })
  const done = await eventually(async () => { const j = await app.prisma.job.findUnique({ where: { id: job.id } }); return j?.state === 'success' && j })
  t.equal(done.description, 'deleted the drive and its image', 'the finished job says what was done')
  t.equal((await api.get('/api/2.0/drives/?name=doomed')).json().meta.total_count, 0)
  t.equal((await api.delete(url(d))).statusCode, 404, 'a second delete is 404')
})

t.test('bulk delete: all or nothing', async t => {
  const mine = [await readyDrive(api, { name: 'b1' }), await readyDrive(api, { name: 'b2' })]
  const theirs = await readyDrive(client(app, bob), { name: 'theirs' })
  const refused = await api.delete('/api/2.0/drives/', { objects: [{ uuid: mine[0].uuid }, { uuid: mine[1].uuid }, { uuid: theirs.uuid }] })
  t.equal(refused.statusCode, 404)
  for (const d of mine) t.equal((await api.get(url(d))).statusCode, 200, 'nothing was deleted')
  t.equal((await client(app, bob).get(url(theirs))).statusCode, 200)

  const unknown = await api.delete('/api/2.0/drives/', { objects: [{ uuid: mine[0].uuid }, { uuid: randomUUID() }] })
  t.equal(unknown.statusCode, 404)
  t.equal((await api.get(url(mine[0]))).statusCode, 200)

  const bad = await api.delete('/api/2.0/drives/', { objects: [{ name: 'no uuid' }] })
  t.equal(bad.statusCode, 400)
  t.equal((await api.delete('/api/2.0/drives/', {})).statusCode, 400)

  const ok = await api.delete('/api/2.0/drives/', { objects: [{ uuid: mine[0].uuid }, mine[1].resource_uri, { uuid: mine[0].uuid }] })
  t.equal(ok.statusCode, 204)
  for (const d of mine) await waitGone(api, d.uuid)
  for (const d of mine) await eventually(async () => !(await app.storage.exists(d.uuid)))
})

t.test('bulk delete takes every body form: {"objects"}, a bare array, one object; items as objects, uuids or URIs', async t => {
  const forms: Array<[string, (ds: any[]) => unknown]> = [
    ['a bare array of objects', ds => ds.map(d => ({ uuid: d.uuid }))],
    ['a bare array of uuids and URIs', ds => [ds[0].uuid.toUpperCase(), ds[1].resource_uri]],
    ['{"objects": [uuid strings]}', ds => ({ objects: ds.map(d => d.uuid) })],
    ['{"objects": [{"resource_uri"}]}', ds => ({ objects: ds.map(d => ({ resource_uri: d.resource_uri })) })]
  ]
  for (const [what, body] of forms) {
    const ds = [await readyDrive(api, { name: 'f1' }), await readyDrive(api, { name: 'f2' })]
    const res = await api.delete('/api/2.0/drives/', body(ds))
    t.equal(res.statusCode, 204, `${what}: ${res.body}`)
    for (const d of ds) t.equal((await api.get(url(d))).statusCode, 404, `${what}: gone`)
  }
  const one = await readyDrive(api, { name: 'single' })
  t.equal((await api.delete('/api/2.0/drives', { uuid: one.uuid })).statusCode, 204, 'one bare object, path without the slash')
  t.equal((await api.get(url(one))).statusCode, 404)

  const keep = await readyDrive(api, { name: 'kept' })
  const theirs = await readyDrive(client(app, bob), { name: 'theirs too' })
  for (const [what, body, status] of [
    ["a bare array with another account's drive", [keep.uuid, theirs.uuid], 404],
    ['a bare array with a server URI', [keep.uuid, `/api/2.0/servers/${keep.uuid}/`], 400],
    ['a bare array with an item of the wrong type', [keep.uuid, 5], 400],
    ['an empty bare array', [], 400],
    ['null', 'null', 400],
    ['no body', undefined, 400]
  ] as const) {
    const res = await api.raw('DELETE', '/api/2.0/drives/', body)
    t.equal(res.statusCode, status, `${what}: ${res.body}`)
    t.ok(Array.isArray(res.json()) && res.json()[0].error_type, `${what}: CloudSigma error array`)
  }
  t.equal((await api.get(url(keep))).statusCode, 200, 'nothing was deleted')
  t.equal((await client(app, bob).get(url(theirs))).statusCode, 200, "the other account's drive stays")
})

t.test('a bulk delete with one busy drive deletes none', async t => {
  const a = await readyDrive(api, { name: 'c1' })
  const b = await readyDrive(api, { name: 'c2' })
  await app.prisma.drive.update({ where: { id: b.uuid }, data: { readers: 1 } })
  const res = await api.delete('/api/2.0/drives/', { objects: [{ uuid: a.uuid }, { uuid: b.uuid }] })
  t.equal(res.statusCode, 503)
  t.equal(res.json()[0].error_type, 'concurrency')
  t.equal((await api.get(url(a))).json().status, 'unmounted')
  await app.prisma.drive.update({ where: { id: b.uuid }, data: { readers: 0 } })
})

t.test('a drive on a stopped server is detached, then deleted', async t => {
  const d = await readyDrive(api, { name: 'attached' })
  const server = await attachToServer(app, alice.id, d.uuid, 'stopped')
  t.equal((await api.get(url(d))).json().status, 'mounted')
  t.equal((await api.delete(url(d))).statusCode, 204)
  t.equal(await app.prisma.serverDrive.count({ where: { serverId: server } }), 0, 'the server no longer lists it')
  t.ok(await app.prisma.server.findUnique({ where: { id: server } }), 'the server stays')
  await waitGone(api, d.uuid)
})

t.test('a drive on a running server cannot be deleted', async t => {
  const d = await readyDrive(api, { name: 'in use' })
  const server = await attachToServer(app, alice.id, d.uuid, 'running')
  const res = await api.delete(url(d))
  t.equal(res.statusCode, 400)
  t.same(res.json()[0], { error_type: 'validation', error_message: res.json()[0].error_message, error_point: 'status' })
  t.equal(await app.prisma.serverDrive.count({ where: { serverId: server } }), 1)
  t.equal((await api.get(url(d))).statusCode, 200)
})

t.test('while the delete job waits, the drive is gone from every view and unusable', async t => {
  const { app: idle } = await buildTestApp(t, { runWorkers: false })
  const user = await createUser(idle)
  const c = client(idle, user)
  const d = await createDrive(c, { name: 'limbo' })
  await idle.prisma.drive.update({ where: { id: d.uuid }, data: { status: 'unmounted', lockedByJob: null } })
  await finishJobsOf(idle, d.uuid)
  t.equal((await c.delete(url(d))).statusCode, 204)
  t.equal((await c.get(url(d))).statusCode, 404)
  t.equal((await c.put(url(d), { name: 'resurrected' })).statusCode, 404)
  t.equal((await c.post(`${url(d)}action/?do=resize`, { size: 5 })).statusCode, 404)
  t.equal((await c.delete(url(d))).statusCode, 404)
  t.equal((await c.get('/api/2.0/drives/')).json().meta.total_count, 0)
  const rowNow = await idle.prisma.drive.findUniqueOrThrow({ where: { id: d.uuid } })
  t.equal(rowNow.deleted, true, 'the row waits for the job')
  t.equal((await c.get('/api/2.0/jobs/?operation=drive_delete')).json().meta.total_count, 1, 'the drive_delete job is listed')
})

t.test('a drive its create job let go of can be deleted before the engine records the job\'s end', async t => {
  const { app: idle } = await buildTestApp(t, { runWorkers: false })
  const user = await createUser(idle)
  const c = client(idle, user)
  const d = await createDrive(c)
  const jobId = d.jobs[0].uuid as string
  // the job runs: while it holds the drive, the drive is busy
  await idle.prisma.job.update({ where: { id: jobId }, data: { state: 'started' } })
  t.equal((await c.delete(url(d))).statusCode, 503, 'busy while the running job holds it')
  // its handler's last statement: the drive rests and no job holds it; the job is not yet finished
  await idle.prisma.drive.update({ where: { id: d.uuid }, data: { status: 'unmounted', lockedByJob: null } })
  t.equal((await c.get(url(d))).json().status, 'unmounted', 'the drive looks ready')
  t.equal((await c.delete(url(d))).statusCode, 204, 'and it is: the delete is not refused as busy')
  t.equal((await idle.prisma.job.findUniqueOrThrow({ where: { id: jobId } })).state, 'started', 'the create job was still unfinished')
})

t.test('a busy drive cannot be deleted', async t => {
  const { app: idle } = await buildTestApp(t, { runWorkers: false })
  const user = await createUser(idle)
  const c = client(idle, user)
  const d = await createDrive(c)
  const res = await c.delete(url(d))
  t.equal(res.statusCode, 503)
  t.equal(res.json()[0].error_type, 'concurrency')
})
