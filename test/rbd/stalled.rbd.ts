// A Ceph cluster that stalls instead of failing: its monitor answers, but no OSD operation ever
// does. Ceph's default waits for an OSD forever, which once held a drive read (its `rbd du` for
// runtime.allocated_size) for the 15 minutes of a test's timeout. The stall is real and only this
// service's: its CEPH_CONF is a copy of the test cluster's with `ms_blackhole_osd` (a Ceph client
// option that drops every message to an OSD), switched on and off (the rbd CLI reads the file on
// every call). Run by `npm run test:rbd`.
import { spawnSync } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import pg from 'pg'
import t, { type Test } from 'tap'
import { RbdDriveStorage, StorageError } from '../../src/storage/index.ts'
import { MEASURE_WAIT_MS } from '../../src/features/drives/allocated.ts'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { readyDrive } from '../drives/helpers.ts'

const MiB = 1024 * 1024
const conf = process.env.CEPH_CONF
if (conf === undefined || conf === '') throw new Error('CEPH_CONF must name the test cluster (npm run test:rbd sets it)')
const pool = process.env.RBD_POOL || 'rbd'
const good = readFileSync(conf, 'utf8')
const withGlobal = (line: string) => good.replace(/^\[global\]\n/m, `[global]\n${line}\n`)
const stalled = withGlobal('ms_blackhole_osd = true')
t.not(stalled, good, 'the test conf has a [global] section')
// every message to an OSD delayed by up to 1 s: a call takes seconds, and succeeds
const slow = withGlobal('ms_inject_delay_type = osd\nms_inject_delay_max = 1\nms_inject_delay_probability = 1')
const serviceConf = path.join(t.testdir(), 'ceph.conf')
const stall = (on: boolean) => writeFileSync(serviceConf, on ? stalled : good)
stall(false)

/** What `p` settles to, or 'still waiting' after `ms`. */
async function within<T> (p: Promise<T>, ms: number): Promise<T | 'still waiting'> {
  const guard = new AbortController()
  try {
    return await Promise.race([p, delay(ms, 'still waiting' as const, { signal: guard.signal })])
  } finally {
    guard.abort()
  }
}

t.test('a call on a stalled cluster fails as unavailable after the OSD operation timeout', async t => {
  const storage = new RbdDriveStorage({ pool, conf: serviceConf, opTimeoutSeconds: 2 })
  const id = randomUUID()
  await storage.create(id, 4 * MiB)
  t.teardown(() => storage.delete(id))
  stall(true)
  const started = Date.now()
  const outcome = await within(storage.stat(id).then(() => 'answered', (err: unknown) => err), 20_000)
  stall(false)
  t.type(outcome, StorageError, 'the call ended with a storage error, not an answer or a hang')
  t.equal((outcome as StorageError).code, 'UNAVAILABLE', 'the service answers 503 for it, and a job retries')
  t.match((outcome as StorageError).message, /timed out/)
  t.ok(Date.now() - started >= 2000, 'it waited the timeout first')
  t.same(await storage.stat(id), { size: 4 * MiB, allocated: 0 }, 'the same call goes through once the cluster answers')
})

/** rbd processes running with `confFile` (each test below gives its storage a file of its own). */
function rbdProcesses (confFile: string): number {
  const r = spawnSync('pgrep', ['-c', '-f', '--', `--conf ${confFile} `], { encoding: 'utf8' })
  return Number(r.stdout.trim() || 0)
}

/** A conf file of this test's own, for a storage whose processes it counts. */
function ownConf (t: Test, name: string): { file: string, stall: (on: boolean) => void } {
  const file = path.join(t.testdir(), name)
  const set = (on: boolean) => writeFileSync(file, on ? stalled : good)
  set(false)
  return { file, stall: set }
}

/**
 * A storage on a conf file of its own with no OSD operation timeout (Ceph's default 0) and the
 * given call deadline, an image of 4 MiB made while the cluster answers, then the stall on.
 */
async function stalledImage (t: Test, name: string, callTimeoutSeconds: number): Promise<{ own: ReturnType<typeof ownConf>, storage: RbdDriveStorage, id: string }> {
  const own = ownConf(t, name)
  const storage = new RbdDriveStorage({ pool, conf: own.file, opTimeoutSeconds: 0, callTimeoutSeconds })
  const id = randomUUID()
  await storage.create(id, 4 * MiB)
  // the test's folder (and its conf) is gone by teardown
  t.teardown(() => new RbdDriveStorage({ pool, conf }).delete(id))
  own.stall(true)
  return { own, storage, id }
}

t.test('a short call waiting on what Ceph never times out fails at its own deadline', async t => {
  // no OSD operation timeout at all (Ceph's default 0): only the call's deadline ends the wait
  const { own, storage, id } = await stalledImage(t, 'deadline.conf', 2)
  const started = Date.now()
  const outcome = await within(storage.stat(id).then(() => 'answered', (err: unknown) => err), 20_000)
  const took = Date.now() - started
  own.stall(false)
  t.type(outcome, StorageError, 'the call ended with a storage error, not an answer or a hang')
  t.equal((outcome as StorageError).code, 'UNAVAILABLE')
  t.match((outcome as StorageError).message, /no answer from the cluster within 2 s/)
  t.ok(took >= 2000 && took < 10_000, `after its deadline, and its process was ended (${took} ms)`)
  await eventually(async () => rbdProcesses(own.file) === 0, { timeoutMs: 10_000 })
  t.same(await storage.stat(id), { size: 4 * MiB, allocated: 0 }, 'the same call goes through once the cluster answers')
  t.same(await new RbdDriveStorage({ pool, conf: own.file, opTimeoutSeconds: 0 }).stat(id), { size: 4 * MiB, allocated: 0 },
    'an OSD timeout of 0 (Ceph\'s own default) leaves short calls without a deadline, not one of 0 s')
})

t.test('closing the storage ends the calls still running and refuses new ones', async t => {
  // no bound at all but close(): a call that would wait forever
  const { own, storage, id } = await stalledImage(t, 'closing.conf', 3600)
  const pending = storage.stat(id).then(() => 'answered', (err: unknown) => err)
  await eventually(async () => rbdProcesses(own.file) > 0)
  await delay(1000)
  t.equal(await within(pending, 0), 'still waiting', 'the call waits on the stalled cluster')
  const started = Date.now()
  t.not(await within(storage.close(), 10_000), 'still waiting', 'close() returned')
  const outcome = await within(pending, 1000)
  t.ok(Date.now() - started < 10_000, `within ${Date.now() - started} ms`)
  t.type(outcome, StorageError, 'the running call failed')
  t.equal((outcome as StorageError).code, 'UNAVAILABLE')
  t.equal(rbdProcesses(own.file), 0, 'no rbd process of this storage is left')
  const after = await storage.exists(id).then(() => 'answered', (err: unknown) => err)
  t.equal((after as StorageError).code, 'UNAVAILABLE', 'a new call is refused')
  t.match((after as StorageError).message, /closed/)
  t.equal(rbdProcesses(own.file), 0, 'without starting a process')
  own.stall(false)
})

t.test('a stopping service ends its jobs\' rbd calls and hands the jobs back', async t => {
  const own = ownConf(t, 'stopping.conf')
  const built = await buildTestApp(t, { config: { storage: 'rbd', cephConf: own.file, rbdPool: pool, cephOpTimeoutSeconds: 20 } })
  const svc = built.app
  const api = client(svc, await createUser(svc))
  const drive = await readyDrive(api, { name: 'grow' })
  own.stall(true)
  const put = await api.put(`/api/2.0/drives/${drive.uuid as string}/`, { name: 'grow', size: 2 * drive.size, media: 'disk' })
  t.equal(put.statusCode, 200, put.body)
  const jobId = put.json().jobs[0].uuid as string
  // the resize job is running its first rbd call, which the cluster never answers
  await eventually(async () => (await api.get(`/api/2.0/jobs/${jobId}/`)).json().state === 'started')
  await eventually(async () => rbdProcesses(own.file) > 0)
  const started = Date.now()
  t.not(await within(svc.close(), 15_000), 'still waiting', 'the service stopped')
  own.stall(false)
  t.ok(Date.now() - started < 15_000, `in ${Date.now() - started} ms, not after the job's 20 s OSD timeout or its lease`)
  t.equal(rbdProcesses(own.file), 0, 'no rbd process of the service is left')
  const db = new pg.Client({ connectionString: built.databaseUrl })
  await db.connect()
  t.teardown(() => db.end())
  const { rows } = await db.query('SELECT state, locked_by FROM jobs WHERE id = $1', [jobId])
  t.equal(rows[0].state, 'queued', 'the resize went back to the queue for the next process')
  t.equal(rows[0].locked_by, null, 'its lease released')
})

// the service's own calls wait far longer than a read may
const { app } = await buildTestApp(t, { config: { storage: 'rbd', cephConf: serviceConf, rbdPool: pool, cephOpTimeoutSeconds: 20 } })
const alice = await createUser(app)
const api = client(app, alice)

/** A drive of 1 MiB written, measured while the cluster answers, then renamed: its cached figure is older than its row. */
async function renamedDrive (t: Test, name: string): Promise<{ uuid: string, allocated: number }> {
  const up = await app.inject({
    method: 'POST',
    url: '/api/2.0/drives/upload/',
    headers: { authorization: alice.authorization, 'content-type': 'application/octet-stream' },
    payload: randomBytes(MiB)
  })
  t.equal(up.statusCode, 201, up.body)
  const uuid = up.body.trim()
  const allocated = (await api.get(`/api/2.0/drives/${uuid}/`)).json().runtime.allocated_size as number
  t.ok(allocated >= MiB, `measured while the cluster answers: ${allocated}`)
  t.equal((await api.put(`/api/2.0/drives/${uuid}/`, { name })).statusCode, 200)
  return { uuid, allocated }
}

t.test('a drive read does not wait for a stalled cluster: it answers with the figure it has', async t => {
  const { uuid, allocated } = await renamedDrive(t, 'renamed')

  stall(true)
  const started = Date.now()
  const read = await within(api.get(`/api/2.0/drives/${uuid}/`), 10_000)
  const took = Date.now() - started
  stall(false)
  t.not(read, 'still waiting', 'the read answered while the cluster stalled')
  if (read === 'still waiting') return
  t.equal(read.statusCode, 200)
  t.equal(read.json().name, 'renamed')
  t.equal(read.json().runtime.allocated_size, allocated, 'with the cached figure')
  t.ok(took >= MEASURE_WAIT_MS - 50, `after waiting its ${MEASURE_WAIT_MS} ms for the storage (${took} ms)`)

  // once the cluster answers, the next read measures the row's version again
  const again = await api.get(`/api/2.0/drives/${uuid}/`)
  t.equal(again.json().runtime.allocated_size, allocated)
  const row = await app.prisma.drive.findUniqueOrThrow({ where: { id: uuid } })
  t.same(row.allocatedAt, row.updatedAt, 'the figure is of the renamed row')
})

t.test('a measurement that comes back after the read answered is stored for the next read', async t => {
  const { uuid, allocated } = await renamedDrive(t, 'slow')
  writeFileSync(serviceConf, slow)
  const read = await api.get(`/api/2.0/drives/${uuid}/`)
  writeFileSync(serviceConf, good)
  t.equal(read.json().runtime.allocated_size, allocated, 'the read answered with the cached figure')
  const before = await app.prisma.drive.findUniqueOrThrow({ where: { id: uuid } })
  t.ok(before.allocatedAt !== null && before.allocatedAt < before.updatedAt, 'the measurement was not back when it answered')
  // no other read: the measurement still running stores its figure
  await eventually(async () => {
    const row = await app.prisma.drive.findUniqueOrThrow({ where: { id: uuid } })
    return row.allocatedAt?.getTime() === row.updatedAt.getTime()
  }, { timeoutMs: 30_000 })
  t.equal(Number((await app.prisma.drive.findUniqueOrThrow({ where: { id: uuid } })).allocatedSize), allocated)
})
