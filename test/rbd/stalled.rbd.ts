// A Ceph cluster that stalls instead of failing: its monitor answers, but no OSD operation ever
// does. Ceph's default waits for an OSD forever, which once held a drive read (its `rbd du` for
// runtime.allocated_size) for the 15 minutes of a test's timeout. The stall is real and only this
// service's: its CEPH_CONF is a copy of the test cluster's with `ms_blackhole_osd` (a Ceph client
// option that drops every message to an OSD), switched on and off (the rbd CLI reads the file on
// every call). Run by `npm run test:rbd`.
import { randomBytes, randomUUID } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { RbdDriveStorage, StorageError } from '../../src/storage/index.ts'
import { MEASURE_WAIT_MS } from '../../src/features/drives/allocated.ts'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'

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
