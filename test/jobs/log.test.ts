// Job logs: ctx.log lines stored per job (batched, fenced by attempt, bounded), served as text at
// /jobs/{uuid}/log/ (followed live with ?follow=1), the last lines in data.log_excerpt, purged
// with the job; lines in the order written; and the time split a real clone and a real upload
// write there.
import t from 'tap'
import http from 'node:http'
import { createHash } from 'node:crypto'
import { enqueueJob } from '../../src/engine/enqueue.ts'
import { appendLog, LOG_EXCERPT_LINES, LOG_MAX_LINES } from '../../src/engine/log.ts'
import { purgeOnce } from '../../src/engine/purge.ts'
import type { JobHandler } from '../../src/engine/types.ts'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { appHandlers, sleep, startEngine, waitForJob } from '../helpers/jobs.ts'
import { MiB, cowStorage, finishedTree, readyDrive, writeRandom } from '../clones/helpers.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
await app.listen({ host: '127.0.0.1', port: 0 })
const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
const alice = await createUser(app)
const bob = await createUser(app)
const api = client(app, alice)

let gate: (() => void) | undefined
const handler: JobHandler = {
  async run (ctx) {
    const n = (ctx.job.params as { lines?: number }).lines ?? 0
    for (let i = 1; i <= n; i++) ctx.log(`line ${i}`)
    if ((ctx.job.params as { wait?: boolean }).wait) {
      await sleep(300)
      ctx.log('halfway: waiting for the test')
      await new Promise<void>(resolve => { gate = resolve })
      ctx.log('released')
    }
    return { ok: true }
  }
}
// the app's own handlers run the real clones and uploads; server_start is the test's
await startEngine(t, app, { ...appHandlers(app), server_start: handler }, { databaseUrl, pollMs: 100 })

const enqueue = (params: Record<string, unknown>) => app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation: 'server_start', params }))

t.test('lines land in the log (text/plain), the excerpt shows the last ones, another account gets 404', async t => {
  const { id } = await enqueue({ lines: 5 })
  await waitForJob(app, id)
  const res = await api.get(`/api/2.0/jobs/${id}/log/`)
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/plain/)
  const lines = res.body.trim().split('\n')
  t.match(lines[0], /^\d{4}-\d\d-\d\dT\S+Z \[1\] started after \d+ ms in the queue$/, 'time, attempt, the engine\'s first line')
  t.same(lines.slice(1, 6).map(l => l.replace(/^\S+ \[1\] /, '')), ['line 1', 'line 2', 'line 3', 'line 4', 'line 5'], 'the handler\'s lines in order')
  t.match(lines.at(-1), /succeeded in [\d.]+ s$/)
  const job = (await api.get(`/api/2.0/jobs/${id}/`)).json()
  t.equal(job.data.log_excerpt.length, LOG_EXCERPT_LINES)
  t.match(job.data.log_excerpt.at(-1), /^succeeded in/)
  t.equal(job.data.log_excerpt[0], 'line 4')
  const listed = (await api.get('/api/2.0/jobs/?limit=0')).json().objects.find((j: { uuid: string }) => j.uuid === id)
  t.same(listed.data.log_excerpt, job.data.log_excerpt, 'the list shows the excerpt too')
  t.equal((await client(app, bob).get(`/api/2.0/jobs/${id}/log/`)).statusCode, 404, 'another account\'s job log is 404')
  t.equal((await client(app, bob).get(`/api/2.0/jobs/${id}/log/?follow=1`)).statusCode, 404)
  t.equal((await app.inject({ url: `/api/2.0/jobs/${id}/log/` })).statusCode, 401)
})

t.test('the log is bounded per job and goes with the job when it is purged', async t => {
  const { id } = await enqueue({ lines: LOG_MAX_LINES + 150 })
  await waitForJob(app, id)
  const stored = await app.prisma.jobLogLine.findMany({ where: { jobId: id }, orderBy: { id: 'asc' } })
  t.equal(stored.length, LOG_MAX_LINES, 'only the last lines are kept')
  t.match(stored.at(-1)!.line, /^succeeded in/)
  t.ok(stored.some(l => l.line === `line ${LOG_MAX_LINES + 150}`), 'the newest handler line is kept')
  t.notOk(stored.some(l => l.line === 'line 1'), 'the oldest are dropped')
  await app.prisma.job.update({ where: { id }, data: { finishedAt: new Date(Date.now() - 30 * 86_400_000) } })
  const purged = await purgeOnce({ prisma: app.prisma, databaseUrl, retentionDays: 3, log: app.log })
  t.ok(purged.jobs >= 1)
  t.equal(await app.prisma.jobLogLine.count({ where: { jobId: id } }), 0, 'the purge removed the log with the job')
  t.equal((await api.get(`/api/2.0/jobs/${id}/log/`)).statusCode, 404)
})

t.test('a stale attempt\'s lines are refused', async t => {
  const { id } = await enqueue({ wait: true })
  await waitForJob(app, id, { states: ['started'] })
  const row = await app.prisma.job.findUniqueOrThrow({ where: { id } })
  t.notOk(await appendLog(app.prisma, { id, attempt: row.attempts - 1 }, row.lockedBy!, [{ at: new Date(), line: 'from a stale attempt' }]), 'an older attempt is refused')
  t.notOk(await appendLog(app.prisma, { id, attempt: row.attempts }, 'another-process', [{ at: new Date(), line: 'from another owner' }]), 'another lease owner is refused')
  t.ok(await appendLog(app.prisma, { id, attempt: row.attempts }, row.lockedBy!, [{ at: new Date(), line: 'from the holder' }]), 'the attempt holding the lease may write')
  const release = async () => { for (;;) { if (gate) break; await sleep(20) } gate!(); gate = undefined }
  await release()
  await waitForJob(app, id)
  const lines = (await app.prisma.jobLogLine.findMany({ where: { jobId: id } })).map(l => l.line)
  t.notOk(lines.some(l => l.includes('stale') || l.includes('another owner')))
  t.ok(lines.includes('from the holder'))
  t.notOk(await appendLog(app.prisma, { id, attempt: row.attempts }, row.lockedBy!, [{ at: new Date(), line: 'after the end' }]), 'nothing is written once the job finished')
})

t.test('?follow=1 streams lines while the job runs and ends when it finishes', async t => {
  const { id } = await enqueue({ lines: 2, wait: true })
  await waitForJob(app, id, { states: ['started'] })
  let text = ''
  let ended = false
  const seen = (pattern: RegExp) => new Promise<void>((resolve, reject) => {
    const deadline = Date.now() + 10_000
    const check = () => { if (pattern.test(text)) resolve(); else if (Date.now() > deadline) reject(new Error(`no ${String(pattern)} in ${text}`)); else setTimeout(check, 20) }
    check()
  })
  const done = new Promise<number>((resolve, reject) => {
    http.get(`${base}/api/2.0/jobs/${id}/log/?follow=1`, { headers: { authorization: alice.authorization } }, (res) => {
      res.setEncoding('utf8')
      res.on('data', (c: string) => { text += c })
      res.on('end', () => { ended = true; resolve(res.statusCode ?? 0) })
    }).on('error', reject)
  })
  await seen(/halfway: waiting for the test/)
  t.notOk(ended, 'the stream stays open while the job runs')
  t.notMatch(text, /released/)
  const release = async () => { for (;;) { if (gate) break; await sleep(20) } gate!(); gate = undefined }
  await release()
  t.equal(await done, 200, 'the stream ends once the job finished')
  t.match(text, /line 1\n.*line 2\n.*halfway.*\n.*released\n.*succeeded in/s, 'every line, in order, the last included')
})

t.test('lines come back in the order written across a power of ten of their ids (numeric, not text, order)', async t => {
  // the next line ids end just below a power of ten (9997, 9998, 9999, 10000, …): "10000" < "9997" as text
  const [{ last }] = await app.prisma.$queryRaw<Array<{ last: bigint }>>`SELECT COALESCE(max(id), 0) AS last FROM job_log`
  const next = 10 ** String(Number(last) + 4).length - 4
  await app.prisma.$queryRaw`SELECT setval(pg_get_serial_sequence('job_log', 'id'), ${next})`
  const { id } = await enqueue({ lines: 120 })
  await waitForJob(app, id)
  const lines = (await api.get(`/api/2.0/jobs/${id}/log/`)).body.trim().split('\n').map(l => l.replace(/^\S+ \[1\] /, ''))
  t.match(lines[0], /^started after/)
  t.same(lines.slice(1, 121), Array.from({ length: 120 }, (_, i) => `line ${i + 1}`), 'every line, in order')
  t.match(lines[121], /^succeeded in/)
})

/** The handler and engine lines of a job's log, without time and attempt. */
const logOf = async (id: string) => (await api.get(`/api/2.0/jobs/${id}/log/`)).body.trim().split('\n').map(l => l.replace(/^\S+Z \[1\] /, ''))
const num = (line: string, name: string) => Number(new RegExp(`${name} (\\d+) ms`).exec(line)?.[1])

t.test('a real clone logs what it copied, how, and its time split: queue wait, copy, fsync, hash, settle', async t => {
  const src = await readyDrive(api, { name: 'data', size: 64 * MiB })
  await writeRandom(app, src.uuid, 0, 4 * MiB)
  const dst = (await api.post(`/api/2.0/drives/${src.uuid}/action/?do=clone`, {})).json().objects[0]
  const job = await finishedTree(api, dst.jobs[0].uuid)
  t.equal(job.state, 'success')
  const lines = await logOf(job.uuid)
  const queued = /^started after (\d+) ms in the queue$/.exec(lines[0])
  t.ok(queued, 'the engine says how long the job queued')
  t.equal(lines[1], `cloning drive ${src.uuid} onto drive ${dst.uuid} (64.0 MiB)${cowStorage(app) ? ' as a copy-on-write clone' : ''}`)
  if (cowStorage(app)) {
    t.match(lines[2], /^cloned with rbd clone \(copy-on-write\): copy \d+ ms, fsync 0 ms, rename 0 ms$/)
  } else {
    t.match(lines[2], /^copied 4\.0 MiB of data with (\S*cp --sparse=(always|auto) --reflink=auto|node \(zero blocks skipped\)): copy \d+ ms, fsync \d+ ms, rename \d+ ms$/, 'what, how, and how long each step took')
  }
  const split = lines[3]
  t.match(split, /^time split: queue wait \d+ ms, copy \d+ ms, fsync \d+ ms, hash 0 ms \(clones are not hashed\), settle \d+ ms$/, 'the time split')
  t.equal(num(split, 'queue wait'), Number(queued![1]), 'the queue wait is the one the engine measured')
  t.equal(num(split, 'copy'), num(lines[2], 'copy'), 'the copy time is the storage\'s')
  t.equal(num(split, 'fsync'), num(lines[2], 'fsync'))
  const took = Number(/^succeeded in ([\d.]+) s$/.exec(lines[4])?.[1]) * 1000
  const parts = num(split, 'copy') + num(split, 'fsync') + num(split, 'settle')
  t.ok(parts <= took + 3, `copy + fsync + settle (${parts} ms) fit in the run (${took} ms)`)
  t.equal(lines.length, 5, 'nothing else')
})

t.test('a real upload logs its time split: receive (with hash), fsync, settle; a chunked one: its chunks\' split, then settle (through one process) or queue wait, hash, settle (through two)', async t => {
  const image = Buffer.alloc(3 * MiB + 5, 7)
  const t0 = Date.now()
  const raw = await app.inject({ method: 'POST', url: '/api/2.0/drives/upload/', headers: { authorization: alice.authorization, 'content-type': 'application/octet-stream' }, payload: image })
  const wall = Date.now() - t0
  t.equal(raw.statusCode, 201)
  const uploaded = (await api.get(`/api/2.0/drives/${raw.body}/`)).json()
  const lines = await logOf(uploaded.jobs[0].uuid)
  t.same(lines.slice(0, 2), [
    `receiving a raw image of 3.0 MiB into drive ${raw.body} (sha256 computed as it is stored, on a worker thread)`,
    `stored 3.0 MiB, sha256 ${createHash('sha256').update(image).digest('hex')}`
  ])
  t.match(lines[2], /^time split: receive \d+ ms \(of which hash \d+ ms; \d+ ms hashing on a worker thread meanwhile, 0 B of the body handed to it without a copy\), fsync \d+ ms, settle \d+ ms$/, 'the time split, last')
  t.ok(num(lines[2], 'hash') <= num(lines[2], 'receive'), 'hashing is part of receiving')
  const parts = num(lines[2], 'receive') + num(lines[2], 'fsync') + num(lines[2], 'settle')
  t.ok(parts <= wall + 3, `receive + fsync + settle (${parts} ms) fit in the request (${wall} ms)`)
  t.equal(lines.length, 3)

  const size = 2 * MiB + 5
  const sha = createHash('sha256').update(image.subarray(0, size)).digest('hex')
  // another process on the same database and drives
  const { app: other } = await buildTestApp(t, { runWorkers: false, databaseUrl, config: { drivesDir: app.config.drivesDir } })
  const chunkedUpload = async (order: number[], via = order.map(() => app)) => {
    const init = (await api.post('/api/2.0/initupload/', { name: 'chunked', size, media: 'disk' })).json().objects[0]
    for (const [i, n] of order.entries()) {
      const link = (await api.post(`/api/2.0/drives/${init.uuid}/action/?do=upload_chunk`, { chunk_number: n, chunk_size: MiB })).json().link
      const put = await via[i].inject({ method: 'POST', url: link, headers: { 'content-type': 'application/octet-stream' }, payload: image.subarray(n * MiB, n === 0 ? MiB : size) })
      t.equal(put.statusCode, 200)
    }
    t.equal((await waitForJob(app, init.jobs[0].uuid)).state, 'success')
    return logOf(init.jobs[0].uuid)
  }
  const chunks = 'time split: 2 chunks in \\d+ ms from the first chunk\'s request; in the chunk requests \\(summed\\): lookups \\d+ ms, receive \\d+ ms \\(of which hash \\d+ ms(; \\d+ ms hashing on a worker thread meanwhile, 0 B of the bodies handed to it without a copy)?\\), fsync \\d+ ms; outside them or recording them \\d+ ms \\(link requests, the client between chunks\\)'
  // sent in order: hashed as they arrived, and the last chunk's request finished the upload
  const inOrder = await chunkedUpload([0, 1])
  t.same(inOrder.slice(0, 1), [`all 2 chunks received; their sha256 was computed as they arrived, in order, on a worker thread: ${sha}`])
  t.match(inOrder[1], new RegExp(`^${chunks}; settle \\d+ ms$`), 'the chunks\' time split, then the settle')
  t.match(inOrder[1], /hashing on a worker thread meanwhile/)
  t.equal(inOrder.length, 2)
  // out of order: the last chunk's request read the other back from the image and finished the upload
  const backwards = await chunkedUpload([1, 0])
  t.same(backwards.slice(0, 1), [`all 2 chunks received; their sha256 was computed as they arrived, on a worker thread, the 1 that arrived out of order read back from the image: 0 as the chunks before them came in, 1 by the last chunk's request: ${sha}`])
  t.match(backwards[1], new RegExp(`^${chunks}; settle \\d+ ms$`))
  t.equal(backwards.length, 2)
  // through two processes: a worker took the job, read the image to hash it and finished it
  const outOfOrder = await chunkedUpload([1, 0], [other, app])
  const queued = /^started after (\d+) ms in the queue$/.exec(outOfOrder[0])
  t.ok(queued)
  t.equal(outOfOrder[1], 'all 2 chunks received; hashing the image')
  t.match(outOfOrder[2], new RegExp(`^sha256 ${sha} of ${size} bytes; ${chunks}; then queue wait \\d+ ms, hash \\d+ ms, settle \\d+ ms$`))
  t.equal(num(outOfOrder[2], 'queue wait'), Number(queued![1]))
  t.match(outOfOrder[3], /^succeeded in [\d.]+ s$/)
})
