// An unreachable Ceph cluster, end to end (issue 16 item 4): requests that need the storage answer
// 503 with Retry-After (never 500, no Ceph internals), and jobs that hit it are requeued and
// retried, not failed, finishing once the cluster answers again. The service's CEPH_CONF is a copy
// of the test cluster's whose monitor address is switched between a dead port and the real one
// (the rbd CLI reads it on every call). Run by `npm run test:rbd`.
import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { waitForJob } from '../helpers/jobs.ts'

const MiB = 1024 * 1024
const conf = process.env.CEPH_CONF
if (conf === undefined || conf === '') throw new Error('CEPH_CONF must name the test cluster (npm run test:rbd sets it)')
const pool = process.env.RBD_POOL || 'rbd'
const good = readFileSync(conf, 'utf8')
const bad = good.replace(/^mon_host = .*$/m, 'mon_host = v2:127.0.0.1:1')
t.not(bad, good, 'the test conf names its monitor in a mon_host line')
const serviceConf = path.join(t.testdir(), 'ceph.conf')
const clusterUp = (up: boolean) => writeFileSync(serviceConf, up ? good : bad)
clusterUp(true)

const { app } = await buildTestApp(t, { config: { storage: 'rbd', cephConf: serviceConf, rbdPool: pool } })
const alice = await createUser(app)
const api = client(app, alice)
const upload = (data: Buffer) => app.inject({
  method: 'POST',
  url: '/api/2.0/drives/upload/',
  headers: { authorization: alice.authorization, 'content-type': 'application/octet-stream' },
  payload: data
})

function isUnavailable (t: Test, res: { statusCode: number, headers: Record<string, unknown>, json: () => unknown }, what: string): void {
  t.equal(res.statusCode, 503, `${what}: 503`)
  t.equal(res.headers['retry-after'], '5', `${what}: Retry-After`)
  t.same(res.json(), [{ error_type: 'backend', error_point: null, error_message: 'The drive storage is unavailable; try again later' }], `${what}: a CloudSigma error without Ceph internals`)
}

const data = randomBytes(MiB + 7)
const made = await upload(data)
if (made.statusCode !== 201) throw new Error(`upload while the cluster is up: ${made.statusCode} ${made.body}`)
const uploaded = made.body

t.test('requests that need the storage answer 503 while the cluster is unreachable', async t => {
  clusterUp(false)
  t.teardown(() => clusterUp(true))
  const drivesBefore = await app.prisma.drive.count({ where: { ownerId: alice.id } })
  isUnavailable(t, await api.get(`/api/2.0/drives/${uploaded}/download/`), 'download')
  isUnavailable(t, await upload(randomBytes(4096)), 'upload')
  t.equal(await app.prisma.drive.count({ where: { ownerId: alice.id } }), drivesBefore, 'the refused upload left no drive')
  // what needs no storage still works
  t.equal((await api.get(`/api/2.0/drives/${uploaded}/`)).json().status, 'unmounted', 'the drive is still listed, unmounted')
})

t.test('a job that finds the cluster unreachable is retried, not failed, and finishes once it is back', async t => {
  clusterUp(false)
  t.teardown(() => clusterUp(true))
  const res = await api.post('/api/2.0/drives/', { name: 'while down', size: 8 * MiB, media: 'disk' })
  t.equal(res.statusCode, 201, 'the create is accepted (its job does the storage work)')
  const drive = res.json().objects[0]
  const jobId = drive.jobs[0].uuid as string
  // the first attempt fails on the connect timeout: the job goes back to queued for a later attempt
  const requeued = await eventually(async () => {
    const row = await app.prisma.job.findUniqueOrThrow({ where: { id: jobId } })
    if (['success', 'error', 'cancelled'].includes(row.state)) throw new Error(`job ended ${row.state} while the cluster was down`)
    return row.attempts >= 1 && row.state === 'queued' ? row : undefined
  }, { timeoutMs: 60_000 })
  t.equal(requeued.error, null, 'no error recorded')
  t.ok(requeued.runAt.getTime() > Date.now() - 1000, 'due again after a backoff')
  t.equal((await api.get(`/api/2.0/drives/${drive.uuid}/`)).json().status, 'creating', 'the drive waits in creating')
  clusterUp(true)
  const done = await waitForJob(app, jobId, { timeoutMs: 60_000 })
  t.equal(done.state, 'success', 'done once the cluster answers')
  t.ok(done.attempts >= 2, `in a later attempt (${done.attempts})`)
  t.equal((await api.get(`/api/2.0/drives/${drive.uuid}/`)).json().status, 'unmounted')
  t.same(await app.storage.stat(drive.uuid), { size: 8 * MiB, allocated: 0 }, 'its image exists')

  // and the drive uploaded before the outage reads back whole
  const got = await api.get(`/api/2.0/drives/${uploaded}/download/`)
  t.equal(got.statusCode, 200)
  t.ok(got.rawPayload.equals(data), 'identical bytes after the outage')
  // (the download's job settles just after its response: until then the delete is 503 busy)
  for (const id of [uploaded, drive.uuid]) await eventually(async () => (await api.delete(`/api/2.0/drives/${id}/`)).statusCode === 204)
  await eventually(async () => !(await app.storage.exists(uploaded)) && !(await app.storage.exists(drive.uuid)), { timeoutMs: 60_000 })
  t.pass('both images removed')
})
