// Drive clone end to end (§2.9): the 202 answer, the job linked from both drives, the copy byte
// for byte and sparse, the body rules, naming strategies, avoid, and the status of every drive;
// the running job's data.extra and the finished job's description (issue 15).
import t from 'tap'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { lockRow } from '../helpers/db.ts'
import { appHandlers, startEngine } from '../helpers/jobs.ts'
import { GiB, MiB, cowStorage, driveStatus, finishedJob, finishedTree, getJob, imageOf, pollingWorker, readyDrive, sha256, writeRandom } from './helpers.ts'

const { app } = await buildTestApp(t)
const alice = await createUser(app)
const bob = await createUser(app)
const api = client(app, alice)

const clone = (id: string, body?: unknown, query = '') => api.post(`/api/2.0/drives/${id}/action/?do=clone${query}`, body)

t.test('clone answers 202 with the new drive in cloning_dst, one drive_clone job on both drives, and copies byte for byte', async t => {
  const src = await readyDrive(api, { name: 'data', size: 64 * MiB, meta: { os: 'linux' } })
  await writeRandom(app, src.uuid, 0, 3 * MiB)
  await writeRandom(app, src.uuid, 40 * MiB + 123, MiB)
  const res = await clone(src.uuid)
  t.equal(res.statusCode, 202)
  const body = res.json()
  t.equal(body.objects.length, 1)
  const dst = body.objects[0]
  t.not(dst.uuid, src.uuid)
  t.equal(dst.status, 'cloning_dst')
  t.equal(dst.name, 'data', 'NONE naming keeps the name')
  t.equal(dst.size, 64 * MiB)
  t.same(dst.meta, { os: 'linux' }, 'meta is copied')
  t.same(dst.mounted_on, [])
  t.equal(dst.jobs.length, 1)
  const jobId = dst.jobs[0].uuid

  const srcNow = (await api.get(`/api/2.0/drives/${src.uuid}/`)).json()
  t.ok(srcNow.jobs.some((j: any) => j.uuid === jobId), 'the source lists the clone job')

  const job = await finishedTree(api, jobId)
  t.equal(job.operation, 'drive_clone')
  t.equal(job.state, 'success')
  t.equal(job.data.progress, 100)
  t.same(job.resources, [`/api/2.0/drives/${src.uuid}/`, `/api/2.0/drives/${dst.uuid}/`], 'source then destination')
  t.ok(job.data.bytes_total >= 4 * MiB, 'bytes_total counts the data, not the nominal size')
  t.equal(job.data.bytes_done, job.data.bytes_total)

  t.equal(await driveStatus(api, dst.uuid), 'unmounted')
  t.equal(await driveStatus(api, src.uuid), 'unmounted', 'the source is back to its status')
  t.equal(await sha256(app, dst.uuid), await sha256(app, src.uuid), 'byte-identical')
  const after = (await api.get(`/api/2.0/drives/${dst.uuid}/`)).json()
  if (cowStorage(app)) {
    // rbd: the clone is copy-on-write; its drive_flatten child detached it from the source
    t.same(job.children.map((c: any) => [c.operation, c.state]), [['drive_flatten', 'success']])
    t.same(after.jobs.map((j: any) => j.uuid).sort(), [jobId, job.children[0].uuid].sort())
  } else {
    t.same(after.jobs.map((j: any) => j.uuid), [jobId])
  }
})

t.test('a 100 GiB drive holding a little data clones without copying its holes and stays sparse', async t => {
  const src = await readyDrive(api, { name: 'big', size: 100 * GiB })
  await writeRandom(app, src.uuid, 0, MiB)
  await writeRandom(app, src.uuid, 50 * GiB, MiB)
  await writeRandom(app, src.uuid, 100 * GiB - MiB, MiB)
  const res = await clone(src.uuid)
  t.equal(res.statusCode, 202)
  const dst = res.json().objects[0]
  const job = await finishedJob(api, dst.jobs[0].uuid)
  t.equal(job.state, 'success')
  // structural, not timed (speed is bench/clone.ts and bench/rbd-clone.ts): the clone moved no holes
  const allocated = (await imageOf(app, src.uuid)).allocated
  if (cowStorage(app)) {
    // copy-on-write: the clone job copied nothing; its drive_flatten child detaches the clone afterwards
    t.equal(job.result.copy_on_write, true)
    t.equal(job.result.bytes_copied, 0, 'no bytes copied by the clone job')
    const tree = await finishedTree(api, job.uuid)
    t.same(tree.children.map((c: any) => [c.operation, c.state]), [['drive_flatten', 'success']])
  } else {
    t.ok(job.result.bytes_copied > 0 && job.result.bytes_copied <= allocated, `copied ${job.result.bytes_copied} bytes: the source's data (${allocated} allocated), not its 100 GiB`)
    t.equal(job.data.bytes_total, job.result.bytes_copied, 'the progress counted the data, not the nominal size')
  }
  t.equal(await driveStatus(api, dst.uuid), 'unmounted')
  const b = await imageOf(app, dst.uuid)
  t.equal(b.size, 100 * GiB)
  t.ok(b.allocated <= allocated + MiB, `destination allocates ${b.allocated} bytes (source ${allocated})`)
  t.ok(b.allocated < 16 * MiB, 'sparse')
  for (const at of [0, 50 * GiB, 100 * GiB - MiB, 7 * GiB]) {
    t.equal(await sha256(app, dst.uuid, at, MiB), await sha256(app, src.uuid, at, MiB), `same bytes at ${at}`)
  }
})

// how the local storage copies (src/storage/local.ts), or rbd's copy-on-write clone
const COPY_METHOD = /^(\S*cp --sparse=(always|auto) --reflink=auto|node \(zero blocks skipped\)|rbd clone \(copy-on-write\))$/

t.test('a finished clone says what it copied and how long it took, not its last in-progress step', async t => {
  const src = await readyDrive(api, { name: 'data', size: 64 * MiB })
  await writeRandom(app, src.uuid, 0, 3 * MiB)
  await writeRandom(app, src.uuid, 40 * MiB, MiB)
  const job = await finishedJob(api, (await clone(src.uuid)).json().objects[0].jobs[0].uuid)
  t.equal(job.state, 'success')
  if (cowStorage(app)) {
    t.match(job.data.description, /^cloned 64\.0 MiB copy-on-write in \d+(\.\d)? s; flattening follows$/)
  } else {
    const copied = (job.result.bytes_copied / MiB).toFixed(1)
    t.ok(job.result.bytes_copied >= 4 * MiB, 'the data was copied')
    t.match(job.data.description, new RegExp(`^copied ${copied.replace('.', '\\.')} MiB \\(of a 64\\.0 MiB drive\\) in \\d+(\\.\\d)? s$`), 'copied N MiB (of a 64.0 MiB drive) in X s')
  }
  t.notMatch(job.data.description, / of \d+(\.\d)? MiB$/, 'not the "copied X of Y" of the running copy')
  t.match(job.data.extra, { method: COPY_METHOD, phase: 'done' }, 'data.extra: the method used, and done')
})

t.test('an empty drive (nothing allocated) clones, and its job says so', async t => {
  const src = await readyDrive(api, { name: 'blank', size: 64 * MiB })
  const job = await finishedJob(api, (await clone(src.uuid)).json().objects[0].jobs[0].uuid)
  t.equal(job.state, 'success')
  t.equal(job.data.progress, 100)
  if (cowStorage(app)) {
    t.match(job.data.description, /^cloned 64\.0 MiB copy-on-write in \d+(\.\d)? s; flattening follows$/)
  } else {
    t.equal(job.result.bytes_copied, 0, 'nothing to copy')
    t.equal(job.data.bytes_total, 0)
    t.match(job.data.description, /^cloned an empty 64\.0 MiB drive in \d+(\.\d)? s$/, 'cloned an empty 64.0 MiB drive in X s')
  }
  t.notMatch(job.data.description, /copying|of 0 B/, 'not the in-progress "copying an empty drive"')
  t.match(job.data.extra, { method: COPY_METHOD, phase: 'done' })
})

t.test('while a clone runs its job shows data.extra: how it copies and which step it is at', async t => {
  // an app of its own whose workers the test starts: a row lock taken on the destination before
  // any worker runs holds the clone at its settle step (it writes that row), however fast the copy
  const own = await buildTestApp(t, { runWorkers: false })
  const ownApi = client(own.app, await createUser(own.app))
  const setup = pollingWorker(own.app)
  const src = await readyDrive(ownApi, { name: 'data', size: 64 * MiB })
  await writeRandom(own.app, src.uuid, 0, 8 * MiB)
  await setup.stop()
  const dst = (await ownApi.post(`/api/2.0/drives/${src.uuid}/action/?do=clone`, {})).json().objects[0]
  const jobId = dst.jobs[0].uuid
  const lock = await lockRow(own.databaseUrl, 'drives', dst.uuid)
  t.teardown(lock.release)
  await startEngine(t, own.app, appHandlers(own.app), { databaseUrl: own.databaseUrl, pollMs: 50 })
  const running = await eventually(async () => {
    const j = await getJob(ownApi, jobId)
    if (j.state !== 'started' && j.state !== 'queued') throw new Error(`the job is ${j.state}`)
    return j.data.extra?.phase === 'settle' ? j : undefined
  }, { timeoutMs: 20_000, intervalMs: 20 }).catch(async (err: unknown) => { await lock.release(); throw err })
  t.equal(running.state, 'started', 'the job is running')
  t.match(running.data.extra, { method: COPY_METHOD, phase: 'settle' }, 'data.extra names the copy method and the step')
  if (!cowStorage(own.app)) t.match(running.data.description, /^copied 8\.0 MiB of 8\.0 MiB$/, 'the description is the running copy\'s')
  // read from the row: a drive GET would wait on the lock too (it stores the measured allocated size)
  t.equal((await own.app.prisma.drive.findUniqueOrThrow({ where: { id: dst.uuid } })).status, 'cloning_dst', 'the destination is still being cloned')
  await lock.release()
  const done = await finishedJob(ownApi, jobId)
  t.equal(done.state, 'success')
  t.same(done.data.extra, { method: running.data.extra.method, phase: 'done' }, 'once done: the same method, phase done')
  t.notMatch(done.data.description, / of 8\.0 MiB$/, 'the finished description replaced the running one')
})

t.test('the body: size below the source is 400 at size, a bigger size extends the copy, given fields win', async t => {
  const src = await readyDrive(api, { name: 'base', size: 8 * MiB, meta: { k: 'v' }, tags: ['11111111-2222-4333-8444-555555555555'] })
  await writeRandom(app, src.uuid, MiB, MiB)
  const small = await clone(src.uuid, { size: 4 * MiB })
  t.equal(small.statusCode, 400)
  t.equal(small.json()[0].error_point, 'size')
  t.equal(await driveStatus(api, src.uuid), 'unmounted', 'a refused clone leaves the source alone')

  const res = await clone(src.uuid, { name: 'bigger', size: 16 * MiB, media: 'cdrom', meta: { x: 'y' }, affinities: ['ssd'], storage_type: 'ssd', status: 'ignored', uuid: 'ignored' })
  t.equal(res.statusCode, 202, res.body)
  const dst = res.json().objects[0]
  t.match(dst, { name: 'bigger', size: 16 * MiB, media: 'cdrom', meta: { x: 'y' }, affinities: ['ssd'], storage_type: 'ssd', status: 'cloning_dst' })
  t.equal((await finishedJob(api, dst.jobs[0].uuid)).state, 'success')
  const after = (await api.get(`/api/2.0/drives/${dst.uuid}/`)).json()
  t.equal(after.size, 16 * MiB)
  t.equal((await imageOf(app, dst.uuid)).size, 16 * MiB, 'the image is extended')
  t.equal(await sha256(app, dst.uuid, 0, 8 * MiB), await sha256(app, src.uuid), 'the first 8 MiB are the source')

  const plain = await clone(src.uuid, {})
  const copy = plain.json().objects[0]
  t.same(copy.meta, { k: 'v' })
  t.same(copy.tags.map((x: any) => x.uuid), ['11111111-2222-4333-8444-555555555555'], 'tags are copied')
  await finishedJob(api, copy.jobs[0].uuid)

  const noBody = await app.inject({ method: 'POST', url: `/api/2.0/drives/${src.uuid}/action/?do=clone`, headers: { authorization: alice.authorization, 'content-type': 'application/json' } })
  t.equal(noBody.statusCode, 202, 'no body at all (Go SDK) is fine')
  await finishedJob(api, noBody.json().objects[0].jobs[0].uuid)
})

t.test('avoid: validated as a list of uuids (400 at avoid), unknown uuids ignored', async t => {
  const src = await readyDrive(api, { name: 'av', size: MiB })
  const bad = await clone(src.uuid, {}, '&avoid=not-a-uuid')
  t.equal(bad.statusCode, 400)
  t.equal(bad.json()[0].error_point, 'avoid')
  t.equal(await app.prisma.drive.count({ where: { ownerId: alice.id, name: 'av' } }), 1, 'nothing was created')
  const ok = await clone(src.uuid, {}, `&avoid=${src.uuid},00000000-0000-4000-8000-000000000000`)
  t.equal(ok.statusCode, 202)
  await finishedJob(api, ok.json().objects[0].jobs[0].uuid)
})

t.test('naming strategies end to end: PUT /profile/ clone_naming, then clone without a name', async t => {
  const src = await readyDrive(api, { name: 'named', size: MiB })
  const today = new Date().toISOString().slice(0, 10)
  const expected: Record<string, RegExp> = {
    COUNTER: /^named_1$/,
    DATE: new RegExp(`^named-${today}$`),
    TIMESTAMP: new RegExp(`^named-${today} \\d{2}:\\d{2}:\\d{2}$`),
    NONE: /^named$/
  }
  for (const [strategy, pattern] of Object.entries(expected)) {
    t.equal((await api.put('/api/2.0/profile/', { clone_naming: strategy })).statusCode, 200)
    const res = await clone(src.uuid)
    const dst = res.json().objects[0]
    t.match(dst.name, pattern, strategy)
    await finishedJob(api, dst.jobs[0].uuid)
  }
  const given = await clone(src.uuid, { name: 'explicit' })
  t.equal(given.json().objects[0].name, 'explicit', 'a given name wins')
  await finishedJob(api, given.json().objects[0].jobs[0].uuid)
})

t.test('who and what can be cloned: another account 404, unknown 404, a drive still being cloned or created 503', async t => {
  const src = await readyDrive(api, { name: 'mine', size: MiB })
  const theirs = await client(app, bob).post(`/api/2.0/drives/${src.uuid}/action/?do=clone`, {})
  t.equal(theirs.statusCode, 404)
  t.equal(theirs.json()[0].error_type, 'notexist')
  t.equal((await clone('00000000-0000-4000-8000-000000000000')).statusCode, 404)

  const creating = await readyDrive(api, { name: 'new', size: MiB })
  await app.prisma.drive.update({ where: { id: creating.uuid }, data: { status: 'creating' } })
  const busy = await clone(creating.uuid)
  t.equal(busy.statusCode, 503)
  t.equal(busy.json()[0].error_type, 'concurrency')

  const dst = await app.prisma.drive.update({ where: { id: creating.uuid }, data: { status: 'cloning_dst' } })
  t.equal((await clone(dst.id)).statusCode, 503, 'a clone destination cannot be cloned until it is done')
  await app.prisma.drive.update({ where: { id: creating.uuid }, data: { status: 'unavailable', lockedByJob: null } })
  const unavailable = await clone(creating.uuid)
  t.equal(unavailable.statusCode, 400)
  t.equal(unavailable.json()[0].error_point, 'status')
  t.equal(await app.prisma.drive.count({ where: { ownerId: alice.id, name: 'new' } }), 1, 'no destination was made')
})
