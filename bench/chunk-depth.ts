/**
 * A chunk's cost deep into a long chunked upload: `npx tsx bench/chunk-depth.ts [depth] [chunks] [rounds]`.
 *
 * resumable.js sends 1 MiB chunks by default: a 100 GiB drive is 102,400 of them, each recorded as
 * a row of upload_chunks. This bench starts the app on a fresh database (the machine's PostgreSQL
 * when DATABASE_URL is set, otherwise the embedded test server) on a local port, makes two
 * uploads of the same size with /initupload/ (`depth` + `chunks` + 1 chunks of 1 MiB; sparse
 * images), records `depth` (default 100,000) chunks of the second as stored, as its earlier
 * chunk requests would have (their rows, the chunk size fixed, the job's bytes), and then sends
 * `chunks` (default 200) chunks to each, one at a time, as resumable.js sends them (POST with
 * Basic auth and the resumable* fields, method octet), alternating the two uploads in `rounds`
 * (default 3) rounds. The anchor is the shallow upload in the same run: its chunks are numbered
 * from 1 (no chunk 0, so neither upload hashes in order), the deep one's from `depth`. Prints
 * each upload's mean and p95 chunk time, and the deep/shallow ratio: 1.0x means a chunk costs
 * the same however many came before it. Client and service share one process (as the other
 * in-process benches): the ratio is the figure, not the absolute times. Figures only, no pass/fail.
 */
import fs from 'node:fs'
import path from 'node:path'
import { buildTestApp, createUser } from '../test/helpers/app.ts'
import { registerRun, stopDaemon, unregisterRun } from '../test/setup/test-db.ts'

const MiB = 1024 * 1024
const depth = Math.max(0, Math.floor(Number(process.argv[2] ?? 100_000)))
const chunks = Math.max(1, Math.floor(Number(process.argv[3] ?? 200)))
const rounds = Math.max(1, Math.floor(Number(process.argv[4] ?? 3)))
const S = MiB
const total = depth + chunks * rounds + 1
const size = total * S
const loadavg = () => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')
const dataDir = path.resolve('data', 'bench-chunk-depth')
const teardowns: Array<() => Promise<void> | void> = []
const t = { teardown: (fn: () => Promise<void> | void) => { teardowns.push(fn) } }

const stats = (ms: number[]) => {
  const s = [...ms].sort((a, b) => a - b)
  return { mean: s.reduce((a, b) => a + b, 0) / s.length, p95: s[Math.min(s.length - 1, Math.floor(s.length * 0.95))] }
}

process.env.DATABASE_URL ??= 'postgresql://postgres@127.0.0.1:5432/postgres'
registerRun(process.pid)
fs.rmSync(dataDir, { recursive: true, force: true })
try {
  const { app } = await buildTestApp(t, { config: { drivesDir: path.join(dataDir, 'drives') } })
  const user = await createUser(app)
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  const init = async (name: string) => {
    const res = await fetch(`${base}/api/2.0/initupload/`, { method: 'POST', headers: { authorization: user.authorization, 'content-type': 'application/json' }, body: JSON.stringify({ name, size, media: 'disk' }) })
    if (!res.ok) throw new Error(`initupload: ${res.status} ${await res.text()}`)
    const d = (await res.json() as { objects: Array<{ uuid: string, jobs: Array<{ uuid: string }> }> }).objects[0]
    return { id: d.uuid, jobId: d.jobs[0].uuid }
  }
  const shallow = await init('shallow')
  const deep = await init('deep')
  console.log(`chunk depth bench: two uploads of ${total} chunks of 1 MiB (${(size / 1024 ** 3).toFixed(1)} GiB, sparse); the deep one with ${depth} chunks recorded before; ${chunks} chunks to each per round, one at a time, ${rounds} rounds; ${(fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^processor/gm) ?? []).length} cores`)
  console.log(`load average at start: ${loadavg()}`)

  // the deep upload's earlier chunks, as their requests recorded them (recordChunk): the rows, the
  // chunk size fixed by the first chunk, and the job's bytes and progress
  let t0 = performance.now()
  for (let from = 0; from < depth; from += 100_000) {
    const to = Math.min(depth, from + 100_000) - 1
    await app.prisma.$executeRawUnsafe('INSERT INTO upload_chunks (drive_id, number, size) SELECT $1::uuid, n, $2::bigint FROM generate_series($3::int, $4::int) AS n', deep.id, S, from, to)
  }
  await app.prisma.$executeRawUnsafe(`UPDATE jobs SET params = params || jsonb_build_object('chunkSize', $2::bigint), bytes_done = $3::bigint,
    progress = LEAST(99, floor($3::numeric * 100 / $4::numeric))::int WHERE id = $1::uuid`, deep.jobId, S, depth * S, size)
  await app.prisma.$executeRawUnsafe('VACUUM ANALYZE upload_chunks')
  console.log(`recorded ${depth} chunks of the deep upload in ${((performance.now() - t0) / 1000).toFixed(1)} s`)

  const body = Buffer.alloc(S, 0x5a)
  const send = async (drive: string, n: number): Promise<number> => {
    const q = new URLSearchParams({ resumableChunkNumber: String(n + 1), resumableChunkSize: String(S), resumableTotalSize: String(size), resumableCurrentChunkSize: String(S), resumableTotalChunks: String(total) })
    const started = performance.now()
    const res = await fetch(`${base}/api/2.0/drives/${drive}/upload/?${q.toString()}`, { method: 'POST', headers: { authorization: user.authorization, 'content-type': 'application/octet-stream' }, body })
    const text = await res.text()
    if (res.status !== 200) throw new Error(`chunk ${n + 1} of ${drive}: ${res.status} ${text}`)
    return performance.now() - started
  }
  const times = { shallow: [] as number[], deep: [] as number[] }
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < chunks; i++) {
      const k = round * chunks + i
      times.shallow.push(await send(shallow.id, 1 + k))
      times.deep.push(await send(deep.id, depth + k))
    }
  }
  t0 = performance.now()
  const [job] = await app.prisma.$queryRawUnsafe<Array<{ bytes: string }>>('SELECT bytes_done::text AS bytes FROM jobs WHERE id = $1::uuid', deep.jobId)
  const expected = (depth + chunks * rounds) * S
  if (Number(job.bytes) !== expected) throw new Error(`the deep upload's job counts ${job.bytes} bytes, not ${expected}`)
  const s = stats(times.shallow)
  const d = stats(times.deep)
  console.log(`load average at end: ${loadavg()}`)
  console.log(`shallow (from chunk 2):          mean ${s.mean.toFixed(2)} ms, p95 ${s.p95.toFixed(2)} ms`)
  console.log(`deep (after ${depth} chunks): mean ${d.mean.toFixed(2)} ms, p95 ${d.p95.toFixed(2)} ms`)
  console.log(`chunk-depth: a chunk after ${depth} chunks takes ${(d.mean / s.mean).toFixed(2)}x the time of an early one (p95 ${(d.p95 / s.p95).toFixed(2)}x)`)
} finally {
  for (const fn of teardowns.reverse()) await fn()
  fs.rmSync(dataDir, { recursive: true, force: true })
  if (unregisterRun(process.pid)) stopDaemon()
}
