// PUT /drives/{uuid}/ (§2.6) and POST /drives/{uuid}/action/?do=resize (§2.7): partial updates,
// meta replacement, resizes through drive_resize jobs, running-server rules, busy drives.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { GiB, attachToServer, createDrive, finishJobsOf, readyDrive, waitStatus } from './helpers.ts'

const { app } = await buildTestApp(t, { config: { driveMaxSize: 100 * GiB } })
const alice = await createUser(app)
const api = client(app, alice)
const url = (d: { uuid: string }) => `/api/2.0/drives/${d.uuid}/`
const resizeUrl = (d: { uuid: string }) => `/api/2.0/drives/${d.uuid}/action/?do=resize`
const row = (d: { uuid: string }) => app.prisma.drive.findUniqueOrThrow({ where: { id: d.uuid } })

t.test('rename, set meta and tags; a partial body keeps the other fields', async t => {
  const d = await readyDrive(api, { name: 'old', meta: { a: '1', b: '2' } })
  const res = await api.put(url(d), { name: 'new' })
  t.equal(res.statusCode, 200)
  const got = res.json()
  t.equal(got.name, 'new')
  t.same(got.meta, { a: '1', b: '2' }, 'meta absent: kept')
  t.equal(got.size, GiB)
  t.equal(got.status, 'unmounted')
  const meta = (await api.put(url(d), { meta: { c: '3' } })).json()
  t.same(meta.meta, { c: '3' }, 'meta present: the whole dict is replaced')
  t.equal(meta.name, 'new')
  const tag = randomUUID()
  const tagged = (await api.put(url(d), { tags: [{ uuid: tag }], allow_multimount: true, media: 'cdrom', affinities: ['ssd'] })).json()
  t.same(tagged.tags, [{ resource_uri: `/api/2.0/tags/${tag}/`, uuid: tag }])
  t.equal(tagged.allow_multimount, true)
  t.equal(tagged.media, 'cdrom')
  t.same(tagged.affinities, ['ssd'])
  t.same((await api.get(url(d))).json(), tagged, 'a GET shows what the PUT answered')
})

t.test('an echoed whole object is accepted: read-only fields are ignored', async t => {
  const d = await readyDrive(api, { name: 'echo' })
  const full = (await api.get(url(d))).json()
  const res = await api.put(url(d), { ...full, name: 'echoed', status: 'mounted', owner: { uuid: randomUUID() }, resource_uri: '/x/', uuid: randomUUID(), jobs: [], mounted_on: [{ uuid: randomUUID() }], runtime: {} })
  t.equal(res.statusCode, 200)
  t.equal(res.json().name, 'echoed')
  t.equal(res.json().status, 'unmounted')
  t.equal(res.json().uuid, d.uuid)
  t.same(res.json().jobs, full.jobs)
})

t.test('storage_type cannot change; bad values change nothing', async t => {
  const d = await readyDrive(api, { name: 'fixed', meta: { k: 'v' } })
  t.equal((await api.put(url(d), { storage_type: 'dssd', name: 'same type' })).statusCode, 200, 'the same storage_type is fine')
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ storage_type: 'ssd', name: 'x' }, 'storage_type'],
    [{ size: 0, name: 'x' }, 'size'],
    [{ size: 101 * GiB, name: 'x' }, 'size'],
    [{ media: 'floppy', name: 'x' }, 'media'],
    [{ meta: { ['m'.repeat(33)]: 'v' }, name: 'x' }, 'meta'],
    [{ tags: ['nope'], name: 'x' }, 'tags'],
    [{ name: 5000n.toString().repeat(400) }, 'name']
  ]
  for (const [body, point] of cases) {
    const res = await api.put(url(d), body)
    t.equal(res.statusCode, 400, JSON.stringify(body).slice(0, 50))
    t.same(res.json()[0].error_point, point)
  }
  const now = (await api.get(url(d))).json()
  t.equal(now.name, 'same type')
  t.same(now.meta, { k: 'v' })
  t.equal(now.size, GiB)
  t.equal(now.storage_type, 'dssd')
})

t.test('a PUT with a new size answers resizing with the old size, then shows the new size', async t => {
  const d = await readyDrive(api, { name: 'grow' })
  const res = await api.put(url(d), { size: 5 * GiB, name: 'grown', media: 'disk' })
  t.equal(res.statusCode, 200)
  t.equal(res.json().status, 'resizing')
  t.equal(res.json().size, GiB, 'the old size until the resize is done')
  t.equal(res.json().name, 'grown')
  const job = res.json().jobs[0]
  t.equal(res.json().jobs.length, 2, 'newest first: the resize, then the create')
  t.equal((await api.get(`/api/2.0/jobs/${job.uuid}/`)).json().operation, 'drive_resize')
  const done = await waitStatus(api, d.uuid, 'unmounted')
  t.equal(done.size, 5 * GiB)
  const stat = await app.storage.stat(d.uuid)
  t.equal(stat.size, 5 * GiB, 'the image has the new size')
  t.ok(stat.allocated < 1024 * 1024, 'and is still sparse')
  const finished = await eventually(async () => { const j = (await api.get(`/api/2.0/jobs/${job.uuid}/`)).json(); return j.state === 'success' && j })
  t.equal(finished.data.description, `resized from ${GiB} to ${5 * GiB} bytes`, 'the finished job says what was done, not "resizing"')

  const shrink = await api.put(url(d), { size: 1234567 })
  t.equal(shrink.json().status, 'resizing')
  t.equal((await waitStatus(api, d.uuid, 'unmounted')).size, 1234567, 'odd sizes are kept exactly')
  t.equal((await app.storage.stat(d.uuid)).size, 1234567)

  const same = await api.put(url(d), { size: 1234567 })
  t.equal(same.json().status, 'unmounted', 'the same size starts no resize')
})

t.test('?do=resize: 202 {objects:[drive]} with status resizing, update or fail', async t => {
  const d = await readyDrive(api, { name: 'act' })
  const res = await api.post(resizeUrl(d), { name: 'acted', size: 3 * GiB, media: 'disk', meta: { why: 'more room' }, status: 'x' })
  t.equal(res.statusCode, 202)
  const [drive] = res.json().objects
  t.equal(res.json().objects.length, 1)
  t.equal(drive.status, 'resizing')
  t.equal(drive.size, GiB)
  t.equal(drive.name, 'acted')
  t.same(drive.meta, { why: 'more room' })
  t.equal((await waitStatus(api, d.uuid, 'unmounted')).size, 3 * GiB)

  const noSize = await api.post(resizeUrl(d), { name: 'x' })
  t.equal(noSize.statusCode, 400)
  t.equal(noSize.json()[0].error_point, 'size')
  const bad = await api.post(resizeUrl(d), { size: -1 })
  t.equal(bad.statusCode, 400)
  t.equal(bad.json()[0].error_point, 'size')
  const unknown = await api.post(`/api/2.0/drives/${d.uuid}/action/?do=explode`, {})
  t.equal(unknown.statusCode, 400)
  t.equal(unknown.json()[0].error_point, 'do')
  t.match(unknown.json()[0].error_message, /resize/)
  const missing = await api.post(`/api/2.0/drives/${d.uuid}/action/`, {})
  t.equal(missing.statusCode, 400)
  t.equal(missing.json()[0].error_point, 'do')
  t.equal((await api.get(url(d))).json().name, 'acted', 'failed calls changed nothing')
})

t.test('mounted on a running server: PUT applies only name/meta/tags/allow_multimount; resize and delete fail', async t => {
  const d = await readyDrive(api, { name: 'busy disk' })
  await attachToServer(app, alice.id, d.uuid, 'running')
  const res = await api.put(url(d), { name: 'renamed', meta: { x: 'y' }, size: 9 * GiB, media: 'cdrom', affinities: ['ssd'], allow_multimount: true })
  t.equal(res.statusCode, 200)
  const got = res.json()
  t.equal(got.name, 'renamed')
  t.same(got.meta, { x: 'y' })
  t.equal(got.allow_multimount, true)
  t.equal(got.size, GiB, 'size silently ignored')
  t.equal(got.media, 'disk', 'media silently ignored')
  t.same(got.affinities, [], 'affinities silently ignored')
  t.equal(got.status, 'mounted', 'no resize started')
  t.equal(got.mounted_on.length, 1)

  const resize = await api.post(resizeUrl(d), { size: 9 * GiB })
  t.equal(resize.statusCode, 400)
  t.same(resize.json()[0].error_point, 'status')
  const del = await api.delete(url(d))
  t.equal(del.statusCode, 400)
  t.same(del.json()[0].error_point, 'status')
  t.equal((await row(d)).size, BigInt(GiB))
  t.equal((await api.get(url(d))).statusCode, 200, 'still there')
})

t.test('mounted on a stopped server: a resize returns to mounted', async t => {
  const d = await readyDrive(api, { name: 'parked' })
  const server = await attachToServer(app, alice.id, d.uuid, 'stopped')
  const res = await api.put(url(d), { size: 2 * GiB })
  t.equal(res.json().status, 'resizing')
  const done = await waitStatus(api, d.uuid, 'mounted')
  t.equal(done.size, 2 * GiB)
  t.same(done.mounted_on, [{ resource_uri: `/api/2.0/servers/${server}/`, uuid: server }])
})

t.test('busy drives: 503 concurrency for size changes, edits still allowed', async t => {
  const d = await readyDrive(api, { name: 'contended' })
  await app.prisma.drive.update({ where: { id: d.uuid }, data: { readers: 1 } })
  for (const res of [await api.put(url(d), { size: 2 * GiB }), await api.post(resizeUrl(d), { size: 2 * GiB }), await api.delete(url(d))]) {
    t.equal(res.statusCode, 503, 'a clone source cannot change')
    t.equal(res.json()[0].error_type, 'concurrency')
  }
  t.equal((await api.put(url(d), { name: 'still editable' })).json().status, 'cloning_src')
  await app.prisma.drive.update({ where: { id: d.uuid }, data: { readers: 0 } })

  // two resizes at once: one wins, the other is told to retry
  const [a, b] = await Promise.all([api.put(url(d), { size: 2 * GiB }), api.put(url(d), { size: 3 * GiB })])
  t.same([a.statusCode, b.statusCode].sort(), [200, 503])
  const again = await api.post(resizeUrl(d), { size: 4 * GiB })
  if (again.statusCode !== 503) {
    // accepted only because the first resize had finished (the drive is resizing again now, for this one)
    t.ok(again.statusCode === 200 || again.statusCode === 202, `${again.statusCode} ${again.body.slice(0, 120)}`)
    const resizes = await app.prisma.job.findMany({ where: { operation: 'drive_resize', params: { path: ['driveId'], equals: d.uuid } }, orderBy: { created: 'asc' } })
    t.equal(resizes.length, 2, 'the winner and this one')
    t.ok(resizes[0].finishedAt !== null && resizes[0].finishedAt <= resizes[1].created, 'only when the first resize had already finished')
  }
  await waitStatus(api, d.uuid, 'unmounted')
  t.ok([2 * GiB, 3 * GiB, 4 * GiB].includes(Number((await row(d)).size)))
})

t.test('a drive whose create job has not run is busy; unavailable drives can only be deleted', async t => {
  const { app: idle } = await buildTestApp(t, { runWorkers: false })
  const user = await createUser(idle)
  const c = client(idle, user)
  const d = await createDrive(c, { name: 'pending' })
  for (const res of [await c.put(url(d), { size: 2 * GiB }), await c.post(resizeUrl(d), { size: 2 * GiB }), await c.delete(url(d))]) {
    t.equal(res.statusCode, 503)
    t.same(res.json(), [{ error_type: 'concurrency', error_message: res.json()[0].error_message, error_point: null }])
  }
  const renamed = await c.put(url(d), { name: 'renamed while creating' })
  t.equal(renamed.statusCode, 200)
  t.equal(renamed.json().status, 'creating')

  await idle.prisma.drive.update({ where: { id: d.uuid }, data: { status: 'unavailable', lockedByJob: null } })
  await finishJobsOf(idle, d.uuid)
  const resize = await c.post(resizeUrl(d), { size: 2 * GiB })
  t.equal(resize.statusCode, 400)
  t.equal(resize.json()[0].error_point, 'status')
  t.equal((await c.delete(url(d))).statusCode, 204)
})

t.test('a failed resize leaves the drive at the size of its image', async t => {
  const d = await readyDrive(api, { name: 'flaky' })
  const { driveResizeHandler } = await import('../../src/features/drives/handlers/drive-resize.ts')
  const jobId = randomUUID()
  await app.prisma.drive.update({ where: { id: d.uuid }, data: { status: 'resizing', lockedByJob: jobId } })
  await app.storage.resize(d.uuid, 2 * GiB)
  await driveResizeHandler(app.storage).cleanup!({
    job: { id: jobId, ownerId: alice.id, operation: 'drive_resize', parentId: null, rootId: jobId, params: { driveId: d.uuid, size: 2 * GiB }, checkpoint: null, attempts: 1 },
    signal: new AbortController().signal,
    prisma: app.prisma,
    fence: async () => {},
    guard: () => {},
    fenced: async (fn) => app.prisma.$transaction(fn),
    fencedStatement: async () => { throw new Error('a cleanup writes no fenced statement') },
    log: () => {},
    logger: app.log,
    progress: () => {},
    checkpoint: async () => {}
  }, { state: 'error' })
  const now = (await api.get(url(d))).json()
  t.equal(now.status, 'unmounted')
  t.equal(now.size, 2 * GiB)
  t.equal((await row(d)).lockedByJob, null)
})
