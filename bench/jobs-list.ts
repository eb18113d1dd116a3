/**
 * /jobs/ list latency with a million rows: `npx tsx bench/jobs-list.ts [rows] [runs]`.
 *
 * On a fresh database, inserts `rows` (default 1,000,000) finished and running jobs of one
 * account with SQL (one in ten with a child, one in ten linked to one of 1000 drives), plus 10,000
 * of another account, ANALYZEs, then times `runs` (default 20) GET requests per query through
 * app.inject (routing, auth, validation, Prisma, serialisation; no network) and prints the median
 * and p95. Figures only, no pass/fail.
 */
import fs from 'node:fs'
import { buildTestApp, createUser } from '../test/helpers/app.ts'
import { registerRun, stopDaemon, unregisterRun } from '../test/setup/test-db.ts'

const rows = Math.max(1000, Number(process.argv[2] ?? 1_000_000))
const runs = Math.max(1, Number(process.argv[3] ?? 20))
const loadavg = () => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')
const teardowns: Array<() => Promise<void> | void> = []
const t = { teardown: (fn: () => Promise<void> | void) => { teardowns.push(fn) } }

process.env.DATABASE_URL ??= 'postgresql://postgres@127.0.0.1:5432/postgres'
registerRun(process.pid)
try {
  const { app } = await buildTestApp(t, { runWorkers: false })
  const user = await createUser(app)
  const other = await createUser(app)
  const fill = async (ownerId: string, n: number) => {
    for (let from = 1; from <= n; from += 100_000) {
      const to = Math.min(n, from + 99_999)
      await app.prisma.$executeRawUnsafe(`
        INSERT INTO jobs (id, owner_id, root_id, operation, state, progress, created, last_modified, started_at, finished_at)
        SELECT x.id, $1::uuid, x.id,
          (ARRAY['drive_clone','server_clone','drive_create','drive_resize','server_start'])[1 + i % 5],
          CASE WHEN i % 100 = 0 THEN 'started' WHEN i % 37 = 0 THEN 'error' ELSE 'success' END,
          CASE WHEN i % 100 = 0 THEN 50 ELSE 100 END,
          now() - make_interval(secs => (${n} - i) * 0.25), now() - make_interval(secs => (${n} - i) * 0.25) + interval '1 second',
          now() - make_interval(secs => (${n} - i) * 0.25), CASE WHEN i % 100 = 0 THEN NULL ELSE now() - make_interval(secs => (${n} - i) * 0.25) + interval '1 second' END
        FROM (SELECT gen_random_uuid() AS id, i FROM generate_series($2::int, $3::int) AS i) x`, ownerId, from, to)
    }
    // a child under one in ten jobs, and a drive link on one in ten
    await app.prisma.$executeRawUnsafe(`
      INSERT INTO jobs (id, owner_id, root_id, parent_id, operation, state, progress, created, last_modified, finished_at, bytes_total, bytes_done)
      SELECT gen_random_uuid(), owner_id, id, id, 'drive_clone', state, progress, created, last_modified, finished_at, 1073741824, 1073741824
      FROM jobs WHERE owner_id = $1::uuid AND parent_id IS NULL AND abs(hashtext(id::text)) % 10 = 0`, ownerId)
    await app.prisma.$executeRawUnsafe(`
      INSERT INTO job_resources (job_id, resource_type, resource_id, mode)
      SELECT id, 'drives', ('00000000-0000-4000-8000-' || lpad((abs(hashtext(id::text)) % 1000)::text, 12, '0'))::uuid, 'write'
      FROM jobs WHERE owner_id = $1::uuid AND abs(hashtext(id::text || 'r')) % 10 = 0`, ownerId)
  }
  let t0 = performance.now()
  await fill(user.id, rows)
  await fill(other.id, 10_000)
  await app.prisma.$executeRawUnsafe('ANALYZE jobs')
  await app.prisma.$executeRawUnsafe('ANALYZE job_resources')
  const total = await app.prisma.job.count()
  console.log(`load average: ${loadavg()}`)
  console.log(`rows:     ${total} jobs (${rows} top-level of one account + children + 10,000 of another), loaded in ${((performance.now() - t0) / 1000).toFixed(0)} s`)

  const headers = { authorization: user.authorization }
  const time = async (label: string, url: string | (() => string)) => {
    const ms: number[] = []
    let status = 0
    let count = 0
    let totalCount: unknown
    for (let i = 0; i < runs; i++) {
      const u = typeof url === 'string' ? url : url()
      t0 = performance.now()
      const res = await app.inject({ url: u, headers })
      ms.push(performance.now() - t0)
      status = res.statusCode
      count = res.json().objects?.length ?? 0
      totalCount = res.json().meta?.total_count
    }
    ms.sort((a, b) => a - b)
    console.log(`${label.padEnd(58)} median ${ms[Math.floor(ms.length / 2)].toFixed(1).padStart(7)} ms  p95 ${ms[Math.floor(ms.length * 0.95)].toFixed(1).padStart(7)} ms  (${status}, ${count} objects${totalCount === undefined ? '' : `, total_count ${String(totalCount)}`})`)
  }
  const first = await app.inject({ url: '/api/2.0/jobs/?cursor=', headers })
  let cursor = first.json().meta.next_cursor as string
  await time('GET /jobs/ (default: -last_modified, limit 20)', '/api/2.0/jobs/')
  await time('GET /jobs/detail/?limit=100', '/api/2.0/jobs/detail/?limit=100')
  // offset pages answer with total_count (issue 18: ≤ 50 ms at a million rows)
  await time('GET /jobs/?offset=0&limit=20 (offset page, total_count)', '/api/2.0/jobs/?offset=0&limit=20')
  await time(`GET /jobs/?offset=${Math.floor(rows / 2)} (offset page, total_count)`, `/api/2.0/jobs/?offset=${Math.floor(rows / 2)}`)
  await time('GET /jobs/?cursor= (keyset, first page)', '/api/2.0/jobs/?cursor=')
  await time('GET /jobs/?cursor=<page 2>', `/api/2.0/jobs/?cursor=${cursor}`)
  // a cursor half-way down, like offset=500000 (the cursor is base64url JSON {k, id})
  const [mid] = await app.prisma.$queryRawUnsafe<Array<{ id: string, last_modified: Date }>>(
    'SELECT id::text, last_modified FROM jobs WHERE owner_id = $1::uuid AND parent_id IS NULL ORDER BY last_modified DESC, id OFFSET $2 LIMIT 1', user.id, Math.floor(rows / 2))
  cursor = Buffer.from(JSON.stringify({ k: mid.last_modified.toISOString(), id: mid.id })).toString('base64url')
  await time(`GET /jobs/?cursor=<after row ${Math.floor(rows / 2)}>`, `/api/2.0/jobs/?cursor=${cursor}`)
  await time('GET /jobs/?state=started', '/api/2.0/jobs/?state=started')
  await time('GET /jobs/?state=error&operation=drive_clone', '/api/2.0/jobs/?state=error&operation=drive_clone')
  await time('GET /jobs/?resource=<drive uuid>', '/api/2.0/jobs/?resource=00000000-0000-4000-8000-000000000042')
  await time('GET /jobs/?last_modified__gt=<1 hour ago>', `/api/2.0/jobs/?last_modified__gt=${new Date(Date.now() - 3_600_000).toISOString()}`)
  await time('GET /jobs/?order_by=created', '/api/2.0/jobs/?order_by=created')
  const one = first.json().objects[0].uuid
  await time('GET /jobs/{uuid}/', `/api/2.0/jobs/${one}/`)
  console.log(`load average at end: ${loadavg()}`)
} finally {
  for (const fn of teardowns.reverse()) await fn()
  if (unregisterRun(process.pid)) stopDaemon()
}
