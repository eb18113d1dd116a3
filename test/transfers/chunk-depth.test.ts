// A chunk's cost deep into a long chunked upload (issue 18; bench/chunk-depth.ts measures it): the
// record of a chunk counts the chunks before it from its job's bytes, not by reading their rows in
// upload_chunks, which every record did under the job's row lock (a chunk after 100,000 took twice
// the time of an early one). Its own database, so that PostgreSQL's statistics of upload_chunks
// show this upload's reads alone.
import pg from 'pg'
import t from 'tap'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { waitForJob } from '../helpers/jobs.ts'
import { randomImage, sha256 } from './helpers.ts'

const { app, databaseUrl } = await buildTestApp(t)
const alice = await createUser(app)
const api = client(app, alice)

const init = async (size: number) => {
  const res = await api.post('/api/2.0/initupload/', { name: 'deep', size, media: 'disk' })
  if (res.statusCode !== 201) throw new Error(`initupload: ${res.statusCode} ${res.body}`)
  return res.json().objects[0] as { uuid: string, jobs: Array<{ uuid: string }> }
}

/** resumable.js's query string for chunk `number` (from 1) of `count` chunks of `K` bytes of a `size` byte file. */
const url = (uuid: string, number: number, K: number, size: number, count: number) => `/api/2.0/drives/${uuid}/upload/?` + new URLSearchParams({
  resumableChunkNumber: String(number),
  resumableChunkSize: String(K),
  resumableCurrentChunkSize: String(number === count ? size - (count - 1) * K : K),
  resumableTotalSize: String(size),
  resumableIdentifier: `${size}-image`,
  resumableTotalChunks: String(count)
}).toString()

t.test("a chunk's record reads none of the chunk rows before it (the job's bytes count them); the last one counts the rows, and the upload completes", async t => {
  // 5,000 chunks of 4 KiB recorded as their requests would have (rows, chunk size, the job's
  // bytes), then the two last ones sent; a count of the rows per record read every row (twice)
  const N = 5000
  const K = 4096
  const size = (N + 2) * K
  const d = await init(size)
  const jobId = d.jobs[0].uuid
  const seed = new pg.Client({ connectionString: databaseUrl })
  await seed.connect()
  t.teardown(() => seed.end())
  await seed.query('INSERT INTO upload_chunks (drive_id, number, size) SELECT $1::uuid, n, $2::bigint FROM generate_series(0, $3::int - 1) AS n', [d.uuid, K, N])
  await seed.query("UPDATE jobs SET params = params || jsonb_build_object('chunkSize', $2::bigint), bytes_done = $3::bigint WHERE id = $1::uuid", [jobId, K, N * K])
  // the statistics of this connection now, those of the app's connections when they are idle (within 10 s)
  await seed.query('SELECT pg_stat_force_next_flush()')
  await seed.query('SELECT 1')
  const stats = async () => (await seed.query<{ reads: string, inserted: string }>(`
    SELECT (SELECT COALESCE(sum(idx_tup_read), 0) FROM pg_stat_user_indexes WHERE relname = 'upload_chunks') + COALESCE(max(seq_tup_read), 0) AS reads,
      COALESCE(max(n_tup_ins), 0) AS inserted
    FROM pg_stat_user_tables WHERE relname = 'upload_chunks'`)).rows.map(r => ({ reads: Number(r.reads), inserted: Number(r.inserted) }))[0]
  await eventually(async () => (await stats()).inserted === N, { timeoutMs: 20_000, intervalMs: 200 })
  const before = await stats()
  const file = Buffer.alloc(size)
  const chunk = (number: number, bytes: Buffer) => app.inject({
    method: 'POST',
    url: url(d.uuid, number, K, size, N + 2),
    headers: { authorization: alice.authorization, 'content-type': 'application/octet-stream' },
    payload: bytes
  })
  const a = randomImage(K)
  const first = await chunk(N + 1, a)
  t.equal(first.statusCode, 200, first.body)
  t.match(JSON.parse(first.body), { chunk: N + 1, chunks_stored: N + 1, chunks_total: N + 2, complete: false })
  // the record's reads are flushed with its insert (one transaction)
  await eventually(async () => (await stats()).inserted === N + 1, { timeoutMs: 20_000, intervalMs: 200 })
  const after = await stats()
  t.ok(after.reads - before.reads < 100, `the chunk's lookup and record read ${after.reads - before.reads} entries of upload_chunks (a count of the rows reads ${N} or more)`)
  const again = await app.inject({ method: 'GET', url: url(d.uuid, N + 1, K, size, N + 2), headers: { authorization: alice.authorization } })
  t.equal(again.statusCode, 200, again.body)
  t.match(JSON.parse(again.body), { chunks_stored: N + 1, complete: false }, 'a stored chunk is counted the same way')
  const b = randomImage(K)
  const last = await chunk(N + 2, b)
  t.equal(last.statusCode, 200, last.body)
  t.match(JSON.parse(last.body), { chunk: N + 2, chunks_stored: N + 2, chunks_total: N + 2, complete: true })
  b.copy(file, (N + 1) * K)
  a.copy(file, N * K)
  const job = await waitForJob(app, jobId)
  t.equal(job.state, 'success', JSON.stringify(job.error))
  t.same(job.result, { sha256: sha256(file), bytes: size })
  t.match((await api.get(`/api/2.0/drives/${d.uuid}/`)).json(), { status: 'unmounted', size })
})
