/**
 * /jobs/ list latency with a million rows: `npx tsx bench/jobs-list.ts [rows] [runs]`.
 *
 * On a fresh database, inserts `rows` (default 1,000,000) finished and running jobs of one
 * account with SQL (one in ten with a child, one in ten linked to one of 1000 drives), plus 10,000
 * of another account, then VACUUM ANALYZEs the tables, as autovacuum does after a bulk of inserts
 * in production: VACUUM sets the visibility map, without which no scan is index-only (every index
 * entry would fetch its table row to check it is visible). Then times `runs` (default 20) GET
 * requests per query through app.inject (routing, auth, validation, SQL, serialisation; no
 * network) and prints the median and p95; an estimated total_count is marked `~`.
 *
 * Anchors in the same run, through the same pg pool: the bare id-only statement of the deep page
 * (`SELECT id ... OFFSET n LIMIT 20`, the index-only skip that an offset page paid until the
 * unfiltered list in last_modified order seeked its ten minutes instead, job_top_finished) and the
 * plain `SELECT * ... OFFSET n LIMIT 20` (the rows read and dropped one by one, as the list did
 * before that); and for the deep page of one operation, the bare id-only statement of that
 * filtered list.
 * The last line is the deep page's ratios to them. Figures only, no pass/fail.
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
  const loaded = performance.now() - t0
  t0 = performance.now()
  await app.prisma.$executeRawUnsafe('VACUUM ANALYZE jobs')
  await app.prisma.$executeRawUnsafe('VACUUM ANALYZE job_resources')
  const total = await app.prisma.job.count()
  console.log(`load average: ${loadavg()}`)
  console.log(`rows:     ${total} jobs (${rows} top-level of one account + children + 10,000 of another), loaded in ${(loaded / 1000).toFixed(0)} s, ` +
    `then VACUUM ANALYZE in ${((performance.now() - t0) / 1000).toFixed(0)} s (as autovacuum would: sets the visibility map for index-only scans)`)

  const headers = { authorization: user.authorization }
  const print = (label: string, ms: number[], detail: string) => {
    ms.sort((a, b) => a - b)
    const median = ms[Math.floor(ms.length / 2)]
    console.log(`${label.padEnd(58)} median ${median.toFixed(1).padStart(7)} ms  p95 ${ms[Math.floor(ms.length * 0.95)].toFixed(1).padStart(7)} ms  (${detail})`)
    return median
  }
  const time = async (label: string, url: string | (() => string)) => {
    const ms: number[] = []
    let status = 0
    let count = 0
    let meta: { total_count?: number, total_count_estimated?: boolean } | undefined
    for (let i = 0; i < runs; i++) {
      const u = typeof url === 'string' ? url : url()
      t0 = performance.now()
      const res = await app.inject({ url: u, headers })
      ms.push(performance.now() - t0)
      status = res.statusCode
      count = res.json().objects?.length ?? 0
      meta = res.json().meta
    }
    return print(label, ms, `${status}, ${count} objects${meta?.total_count === undefined ? '' : `, total_count ${meta.total_count_estimated ? '~' : ''}${meta.total_count}`}`)
  }
  // the same statement `runs` times on the app's pg pool
  const timeSql = async (label: string, text: string, values: unknown[]) => {
    const ms: number[] = []
    let n = 0
    for (let i = 0; i < runs; i++) {
      t0 = performance.now()
      n = (await app.dbPool.query(text, values)).rowCount ?? 0
      ms.push(performance.now() - t0)
    }
    return print(label, ms, `${n} rows`)
  }
  const deep = Math.floor(rows / 2)
  const first = await app.inject({ url: '/api/2.0/jobs/?cursor=', headers })
  let cursor = first.json().meta.next_cursor as string
  await time('GET /jobs/ (default: -last_modified, limit 20)', '/api/2.0/jobs/')
  await time('GET /jobs/detail/?limit=100', '/api/2.0/jobs/detail/?limit=100')
  // offset pages answer with total_count (issue 18: ≤ 50 ms at a million rows)
  await time('GET /jobs/?offset=0&limit=20 (offset page, total_count)', '/api/2.0/jobs/?offset=0&limit=20')
  const deepMs = await time(`GET /jobs/?offset=${deep} (offset page, total_count)`, `/api/2.0/jobs/?offset=${deep}`)
  const top = 'FROM jobs WHERE owner_id = $1::uuid AND parent_id IS NULL ORDER BY last_modified DESC, id OFFSET $2 LIMIT 20'
  const skipMs = await timeSql(`anchor: pg SELECT id ... OFFSET ${deep} LIMIT 20`, `SELECT id ${top}`, [user.id, deep])
  const plainMs = await timeSql(`anchor: pg SELECT * ... OFFSET ${deep} LIMIT 20`, `SELECT * ${top}`, [user.id, deep])
  await time(`GET /jobs/?order_by=last_modified&offset=${deep} (offset page)`, `/api/2.0/jobs/?order_by=last_modified&offset=${deep}`)
  await time(`GET /jobs/?order_by=created&offset=${deep} (offset page)`, `/api/2.0/jobs/?order_by=created&offset=${deep}`)
  await time(`GET /jobs/?state=success&offset=${deep} (offset page)`, `/api/2.0/jobs/?state=success&offset=${deep}`)
  // one operation (a fifth of the jobs) half-way down its list, alone and with a finished state;
  // the anchor: the bare skip of that filtered list (the filter tested on each entry of the index)
  const deepOp = Math.floor(rows / 10)
  await time(`GET /jobs/?operation=drive_clone&offset=${deepOp} (offset page)`, `/api/2.0/jobs/?operation=drive_clone&offset=${deepOp}`)
  await timeSql(`anchor: pg SELECT id ... operation ... OFFSET ${deepOp}`, `SELECT id FROM jobs WHERE owner_id = $1::uuid AND parent_id IS NULL AND operation = 'drive_clone'
    ORDER BY last_modified DESC, id OFFSET $2 LIMIT 20`, [user.id, deepOp])
  await time(`GET /jobs/?state=success&operation=drive_clone&offset=${deepOp} (offset page)`, `/api/2.0/jobs/?state=success&operation=drive_clone&offset=${deepOp}`)
  // deep pages the counters do not seek (README, jobs list): a date bound; then filters in created
  // order, which seek since 20261206170000 (an operation) and 20261206190000 (a finished state)
  const daysAgo = (n: number) => new Date(Date.now() - n * 86_400_000).toISOString()
  await time(`GET /jobs/?last_modified__lt=<1 day ago>&offset=${deepOp * 3} (offset page)`, `/api/2.0/jobs/?last_modified__lt=${daysAgo(1)}&offset=${deepOp * 3}`)
  await time(`GET /jobs/?last_modified__gt=<2 days ago>&offset=${deepOp * 3} (offset page)`, `/api/2.0/jobs/?last_modified__gt=${daysAgo(2)}&offset=${deepOp * 3}`)
  await time(`GET /jobs/?order_by=created&operation=drive_clone&offset=${deepOp} (offset page)`, `/api/2.0/jobs/?order_by=created&operation=drive_clone&offset=${deepOp}`)
  await time(`GET /jobs/?order_by=created&state=success&offset=${deep} (offset page)`, `/api/2.0/jobs/?order_by=created&state=success&offset=${deep}`)
  await time('GET /jobs/?cursor= (keyset, first page)', '/api/2.0/jobs/?cursor=')
  await time('GET /jobs/?cursor=<page 2>', `/api/2.0/jobs/?cursor=${cursor}`)
  // a cursor half-way down, like offset=500000 (the cursor is base64url JSON {k, id})
  // its key at the column's microsecond precision, as the API writes it (a millisecond key is refused: 400)
  const [mid] = await app.prisma.$queryRawUnsafe<Array<{ id: string, k: string }>>(
    `SELECT id::text, to_char(last_modified AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS k FROM jobs
     WHERE owner_id = $1::uuid AND parent_id IS NULL ORDER BY last_modified DESC, id OFFSET $2 LIMIT 1`, user.id, Math.floor(rows / 2))
  cursor = Buffer.from(JSON.stringify({ k: mid.k, id: mid.id })).toString('base64url')
  await time(`GET /jobs/?cursor=<after row ${Math.floor(rows / 2)}>`, `/api/2.0/jobs/?cursor=${cursor}`)
  await time('GET /jobs/?state=started', '/api/2.0/jobs/?state=started')
  await time('GET /jobs/?state=error&operation=drive_clone', '/api/2.0/jobs/?state=error&operation=drive_clone')
  await time('GET /jobs/?resource=<drive uuid>', '/api/2.0/jobs/?resource=00000000-0000-4000-8000-000000000042')
  await time('GET /jobs/?last_modified__gt=<1 hour ago>', `/api/2.0/jobs/?last_modified__gt=${new Date(Date.now() - 3_600_000).toISOString()}`)
  await time('GET /jobs/?order_by=created', '/api/2.0/jobs/?order_by=created')
  const one = first.json().objects[0].uuid
  await time('GET /jobs/{uuid}/', `/api/2.0/jobs/${one}/`)
  console.log(`load average at end: ${loadavg()}`)
  console.log(`offset ${deep} page / pg SELECT id ... OFFSET: ${(deepMs / skipMs).toFixed(2)}x; / pg SELECT * ... OFFSET: ${(deepMs / plainMs).toFixed(2)}x`)
} finally {
  for (const fn of teardowns.reverse()) await fn()
  if (unregisterRun(process.pid)) stopDaemon()
}
