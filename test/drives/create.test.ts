// POST /drives/: the three body forms, defaults, validation, atomic bulk create, and the
// drive_create job that makes a sparse image and ends `creating`.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import pg from 'pg'
import { EVENTS_PER_NOTIFY, parseEvents } from '../../src/engine/events.ts'
import { CHANNELS } from '../../src/engine/listener.ts'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { GiB, createDrive, waitStatus } from './helpers.ts'

const { app, databaseUrl } = await buildTestApp(t, { config: { driveMaxSize: 2 * 1024 ** 4 } })
const alice = await createUser(app)
const api = client(app, alice)

const count = async () => app.prisma.drive.count({ where: { ownerId: alice.id } })

t.test('a bare object creates one drive: 201 {objects:[...]} with every §2.1 field', async t => {
  const res = await api.post('/api/2.0/drives/', { name: 'test_drive_0', size: 1024000000, media: 'disk' })
  t.equal(res.statusCode, 201)
  const body = res.json()
  t.same(Object.keys(body), ['objects'])
  const d = body.objects[0]
  t.same(Object.keys(d), [...Object.keys(d)].sort(), 'keys are alphabetical, as in the dumps')
  t.match(d, {
    affinities: [],
    allow_multimount: false,
    backup_scheduler: null,
    grantees: [],
    iops: null,
    licenses: [],
    media: 'disk',
    meta: {},
    mounted_on: [],
    name: 'test_drive_0',
    owner: { resource_uri: `/api/2.0/user/${alice.id}/`, uuid: alice.id },
    permissions: [],
    remote_snapshots: [],
    resource_uri: `/api/2.0/drives/${d.uuid}/`,
    runtime: { is_downloadable: true, is_ephemeral: false, is_snapshotable: null, snapshots_allocated_size: 0, storage_type: 'dssd' },
    size: 1024000000,
    snapshots: [],
    status: 'creating',
    storage_type: 'dssd',
    tags: []
  })
  t.equal(d.jobs.length, 1, 'the drive_create job is listed')
  const job = (await api.get(`/api/2.0/jobs/${d.jobs[0].uuid}/`)).json()
  t.equal(job.operation, 'drive_create')
  t.same(job.resources, [d.resource_uri])

  const ready = await waitStatus(api, d.uuid, 'unmounted')
  t.equal(ready.size, 1024000000, 'the size is kept exactly')
  t.equal(ready.runtime.is_snapshotable, true)
  const stat = await app.storage.stat(d.uuid)
  t.equal(stat.size, 1024000000, 'the image has the exact size')
  t.ok(stat.allocated < 1024 * 1024, `the image is sparse (${stat.allocated} bytes allocated)`)
  t.ok(await app.storage.exists(d.uuid))
  // the handler commits the drive's status, then the engine records the job's end: the job follows
  const state = await eventually(async () => {
    const now = (await api.get(`/api/2.0/jobs/${d.jobs[0].uuid}/`)).json().state as string
    return ['queued', 'started'].includes(now) ? undefined : now
  })
  t.equal(state, 'success', 'the drive_create job succeeds')
  t.equal((await api.get(`/api/2.0/jobs/${d.jobs[0].uuid}/`)).json().data.description, 'created a 1024000000 byte drive', 'and says what was done')
})

t.test('a 1 TiB drive allocates nothing', async t => {
  const d = await createDrive(api, { size: 1024 ** 4 })
  await waitStatus(api, d.uuid, 'unmounted')
  const stat = await app.storage.stat(d.uuid)
  t.equal(stat.size, 1024 ** 4)
  t.ok(stat.allocated < 1024 * 1024)
})

t.test('a bare array and {objects:[...]} create several drives at once', async t => {
  const a = await api.post('/api/2.0/drives/', [{ name: 'a1', size: GiB, media: 'disk' }, { name: 'a2', size: GiB, media: 'cdrom' }])
  t.equal(a.statusCode, 201)
  t.same(a.json().objects.map((o: any) => [o.name, o.media]), [['a1', 'disk'], ['a2', 'cdrom']])
  const b = await api.post('/api/2.0/drives/', { objects: [{ name: 'b1', size: GiB, media: 'disk' }] })
  t.equal(b.statusCode, 201)
  t.equal(b.json().objects.length, 1)
  for (const d of [...a.json().objects, ...b.json().objects]) await waitStatus(api, d.uuid, 'unmounted')
})

t.test('a bulk create announces every job and drive once, in runs: a few NOTIFYs, not one per event', async t => {
  const listen = new pg.Client({ connectionString: databaseUrl })
  await listen.connect()
  t.teardown(() => listen.end())
  const payloads: string[] = []
  listen.on('notification', m => { if (m.channel === CHANNELS.events) payloads.push(m.payload ?? '') })
  await listen.query(`LISTEN "${CHANNELS.events}"`)
  const res = await api.post('/api/2.0/drives/', Array.from({ length: 100 }, (_, k) => ({ name: `bulk-${k}`, size: GiB, media: 'disk' })))
  t.equal(res.statusCode, 201)
  const drives: string[] = res.json().objects.map((o: any) => o.uuid)
  const jobs: string[] = res.json().objects.map((o: any) => o.jobs[0].uuid)
  const create = () => payloads.map(parseEvents).flat().filter(e => e.change === 'added')
  await eventually(async () => create().length >= 200)
  const events = create()
  t.same(events.map(e => [e.resourceType, e.resourceId]), [...jobs.map(id => ['jobs', id]), ...drives.map(id => ['drives', id])], 'each job, then each drive, once, in order')
  t.ok(events.every(e => e.ownerId === alice.id), 'with the owner')
  const createPayloads = payloads.filter(p => parseEvents(p).some(e => e.change === 'added'))
  t.ok(createPayloads.length <= Math.ceil(200 / EVENTS_PER_NOTIFY) + 1, `${createPayloads.length} NOTIFYs for 200 events`)
  for (const d of drives) await waitStatus(api, d, 'unmounted')
})

t.test('optional fields: storage_type, meta, tags in every related form, affinities, allow_multimount', async t => {
  const tagA = randomUUID()
  const tagB = randomUUID()
  const tagC = randomUUID()
  const d = await createDrive(api, {
    name: '',
    size: '2147483648',
    storage_type: 'local_nvme',
    meta: { description: 'x', ['k'.repeat(32)]: 'y' },
    tags: [tagA, { uuid: tagB }, `/api/2.0/tags/${tagC}/`, tagA],
    affinities: ['ssd'],
    allow_multimount: true,
    status: 'mounted',
    owner: { uuid: randomUUID() }
  })
  t.equal(d.name, '', 'an empty name is accepted')
  t.equal(d.size, 2147483648, 'a numeric string is coerced')
  t.equal(d.storage_type, 'local_nvme')
  t.same(d.runtime, { allocated_size: null, is_downloadable: false, is_ephemeral: true, is_snapshotable: null, snapshots_allocated_size: 0, storage_type: 'local_nvme' })
  t.same(d.meta, { description: 'x', ['k'.repeat(32)]: 'y' })
  t.same(d.tags, [tagA, tagB, tagC].map(u => ({ resource_uri: `/api/2.0/tags/${u}/`, uuid: u })), 'tags are refs, deduplicated')
  t.same(d.affinities, ['ssd'])
  t.equal(d.allow_multimount, true)
  t.equal(d.status, 'creating', 'read-only fields in the body are ignored')
  t.equal(d.owner.uuid, alice.id)
})

t.test('avoid is accepted when it is a uuid list', async t => {
  const ok = await api.post(`/api/2.0/drives/?avoid=${randomUUID()},${randomUUID()}`, { name: 'x', size: GiB, media: 'disk' })
  t.equal(ok.statusCode, 201)
  const before = await count()
  const bad = await api.post('/api/2.0/drives/?avoid=nope', { name: 'x', size: GiB, media: 'disk' })
  t.equal(bad.statusCode, 400)
  t.equal(bad.json()[0].error_point, 'avoid')
  t.equal(await count(), before, 'nothing was created')
})

t.test('bad input: a clear CloudSigma error at the right point, and nothing written', async t => {
  const cases: Array<[unknown, string]> = [
    [{ size: GiB, media: 'disk' }, 'name'],
    [{ name: 'x', media: 'disk' }, 'size'],
    [{ name: 'x', size: GiB }, 'media'],
    [{ name: 'x', size: GiB, media: 'floppy' }, 'media'],
    [{ name: 'x', size: 0, media: 'disk' }, 'size'],
    [{ name: 'x', size: -5, media: 'disk' }, 'size'],
    [{ name: 'x', size: 1.5, media: 'disk' }, 'size'],
    [{ name: 'x', size: 'big', media: 'disk' }, 'size'],
    [{ name: 'x', size: 2 * 1024 ** 4 + 1, media: 'disk' }, 'size'],
    [{ name: 'x', size: GiB, media: 'disk', storage_type: 'tape' }, 'storage_type'],
    [{ name: 'x', size: GiB, media: 'disk', meta: { ['k'.repeat(33)]: 'v' } }, 'meta'],
    [{ name: 'x', size: GiB, media: 'disk', meta: { k: { nested: true } } }, 'k'],
    [{ name: 'x', size: GiB, media: 'disk', tags: ['not-a-uuid'] }, 'tags'],
    [{ name: 'x', size: GiB, media: 'disk', tags: [`/api/2.0/drives/${randomUUID()}/`] }, 'tags'],
    [{ name: 'x', size: GiB, media: 'disk', allow_multimount: 'perhaps' }, 'allow_multimount'],
    [{ objects: [] }, 'objects']
  ]
  const before = await count()
  for (const [body, point] of cases) {
    const res = await api.post('/api/2.0/drives/', body)
    t.equal(res.statusCode, 400, JSON.stringify(body))
    const [err] = res.json()
    t.equal(err.error_type, 'validation')
    t.equal(err.error_point, point, `${JSON.stringify(body).slice(0, 60)} → ${err.error_message}`)
    t.ok(err.error_message.length > 5)
  }
  const malformed = await api.post('/api/2.0/drives/', '{"name": ')
  t.equal(malformed.statusCode, 400)
  t.equal(await count(), before, 'nothing was created')
})

t.test('a bulk create is all or nothing', async t => {
  const before = await count()
  const jobsBefore = await app.prisma.job.count({ where: { ownerId: alice.id } })
  const res = await api.post('/api/2.0/drives/', { objects: [{ name: 'ok', size: GiB, media: 'disk' }, { name: 'too big', size: 3 * 1024 ** 4, media: 'disk' }] })
  t.equal(res.statusCode, 400)
  t.equal(res.json()[0].error_point, 'size')
  t.equal(await count(), before)
  t.equal(await app.prisma.job.count({ where: { ownerId: alice.id } }), jobsBefore, 'no job was enqueued')
})

t.test('the size limit is a setting', async t => {
  const { app: small } = await buildTestApp(t, { config: { driveMaxSize: 10 * GiB } })
  const user = await createUser(small)
  const res = await client(small, user).post('/api/2.0/drives/', { name: 'x', size: 10 * GiB + 1, media: 'disk' })
  t.equal(res.statusCode, 400)
  t.match(res.json()[0].error_message, String(10 * GiB))
  t.equal((await client(small, user).post('/api/2.0/drives/', { name: 'x', size: 10 * GiB, media: 'disk' })).statusCode, 201)
})

t.test('a drive_create that fails leaves nothing behind', async t => {
  const d = await createDrive(api)
  // the job failed: its cleanup runs (as the engine would call it)
  await waitStatus(api, d.uuid, 'unmounted')
  const { driveCreateHandler } = await import('../../src/features/drives/handlers/drive-create.ts')
  const fresh = await createDrive(api)
  await eventually(async () => (await app.prisma.job.findUnique({ where: { id: fresh.jobs[0].uuid } }))?.state === 'success')
  // make the drive look held by a job that failed before finishing
  const jobId = randomUUID()
  await app.prisma.drive.update({ where: { id: fresh.uuid }, data: { status: 'creating', lockedByJob: jobId } })
  const handler = driveCreateHandler(app.storage, app.dbPool)
  await handler.cleanup!({
    job: { id: jobId, ownerId: alice.id, operation: 'drive_create', parentId: null, rootId: jobId, params: { driveId: fresh.uuid, size: GiB }, checkpoint: null, attempts: 1 },
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
  t.equal((await api.get(`/api/2.0/drives/${fresh.uuid}/`)).statusCode, 404, 'the row is gone')
  t.notOk(await app.storage.exists(fresh.uuid), 'the image is gone')
  t.equal((await api.get(`/api/2.0/drives/${d.uuid}/`)).statusCode, 200, 'other drives are untouched')
})
