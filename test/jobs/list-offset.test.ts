// A deep offset page of /jobs/ skips its offset inside an index (issue 18): the page's ids come from
// an index-only scan of a top-level jobs index, and only the page's rows (and their children) are
// read from the table. Checked on the plan the app's prepared statement actually runs, after more
// executions than PostgreSQL plans one by one, and on its generic plan (which a connection may
// cache from other accounts' pages); the pages and total_count match a plain query.
import t from 'tap'
import pg from 'pg'
import { SEEK_FROM, listJobsSql } from '../../src/features/jobs/read-sql.ts'
import { jobFilters, jobOrder, keysetOf } from '../../src/features/jobs/routes.ts'
import { loadTrees } from '../../src/features/jobs/view.ts'
import { EXACT_COUNT_UP_TO } from '../../src/http/list-sql.ts'
import { planList } from '../../src/http/listing.ts'
import { JOB_FIELDS } from '../../src/features/jobs/schemas.ts'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { recordFirstStatement } from '../helpers/db.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const bob = await createUser(app)
const TOP = 40_000
const DEEP = 30_000

// alice: TOP top-level jobs, one in five with a child, one in 97 failed; bob: 2,000 of his own
const seed = (owner: string, n: number) => app.prisma.$executeRawUnsafe(`
  INSERT INTO jobs (id, owner_id, root_id, operation, state, progress, created, last_modified, finished_at)
  SELECT x.id, $1::uuid, x.id, (ARRAY['drive_clone','server_clone','drive_create'])[1 + i % 3],
    CASE WHEN i % 97 = 0 THEN 'error' ELSE 'success' END, 100,
    -- created and last_modified in different orders, with ties on both
    now() - make_interval(secs => i / 2), now() - make_interval(secs => (i * 7919) % $2::int / 3), now()
  FROM (SELECT gen_random_uuid() AS id, i FROM generate_series(1, $2::int) AS i) x`, owner, n)
await seed(alice.id, TOP)
await seed(bob.id, 2000)
await app.prisma.$executeRawUnsafe(`
  INSERT INTO jobs (id, owner_id, root_id, parent_id, operation, state, progress, created, last_modified, finished_at)
  SELECT gen_random_uuid(), owner_id, id, id, 'drive_clone', state, 100, created, last_modified, finished_at
  FROM jobs WHERE parent_id IS NULL AND abs(hashtext(id::text)) % 5 = 0`)
// as autovacuum does after inserts: the visibility map lets a scan answer from the index alone
await app.prisma.$executeRawUnsafe('VACUUM ANALYZE jobs')

// the most of alice's top-level jobs in ten minutes of last_modified or of created (a bucket of
// job_top_finished or job_top_created)
const biggestBucket = Number((await app.dbPool.query<{ n: string }>(`SELECT max(n) AS n FROM (
  SELECT count(*) AS n FROM jobs WHERE owner_id = $1 AND parent_id IS NULL GROUP BY job_list_bucket(last_modified)
  UNION ALL SELECT count(*) FROM jobs WHERE owner_id = $1 AND parent_id IS NULL GROUP BY job_list_bucket(created)) b`, [alice.id])).rows[0].n)

// a query string as the route's schema coerces it, planned as the route plans it
const parse = (q: string): Record<string, unknown> => Object.fromEntries([...new URLSearchParams(q)].map(([k, v]) => [k, k === 'limit' || k === 'offset' ? Number(v) : v]))
function planOf (q: string) {
  const query = parse(q)
  const plan = planList(query, jobFilters, jobOrder, JOB_FIELDS)
  keysetOf(plan) // the route's id tiebreak, opposite to a date order
  return { query, plan }
}

interface PlanNode {
  'Node Type': string
  'Relation Name'?: string
  'Index Name'?: string
  'Subplan Name'?: string
  'Actual Rows': number
  'Actual Loops': number
  'Heap Fetches'?: number
  'Rows Removed by Filter'?: number
  Plans?: PlanNode[]
}
const nodes = (n: PlanNode): PlanNode[] => [n, ...(n.Plans ?? []).flatMap(nodes)]
// the capped count (the CTE `counted`) reads at most EXACT_COUNT_UP_TO + 1 matches, whatever its scan
const isCount = (n: PlanNode) => n['Subplan Name'] === 'CTE counted'
const pageNodes = (n: PlanNode): PlanNode[] => isCount(n) ? [] : [n, ...(n.Plans ?? []).flatMap(pageNodes)]

// each with the share of alice's top-level jobs that match it
for (const [q, index, share, generic] of [
  [`offset=${DEEP}`, 'jobs_top_owner_last_modified_idx', 1],
  // the successful jobs have their own partial index: no state to test on each skipped entry
  [`offset=${DEEP}&state=success`, 'jobs_top_owner_success_idx', 96 / 97],
  [`offset=${Math.floor(DEEP / 3)}&state=success&operation=drive_clone`, 'jobs_top_owner_success_idx', 96 / 97 / 3],
  // a connection's plan of the page statement, cached for every account, may be the generic one
  // (PostgreSQL picks it where it costs no more than the plans for the values, as on a small
  // account): that plan knows no parameter's value, so state=success is written as a literal
  [`offset=${DEEP}&state=success`, 'jobs_top_owner_success_idx', 96 / 97, 'generic'],
  [`offset=${DEEP}`, 'jobs_top_owner_last_modified_idx', 1, 'generic'],
  // an operation, with or without a finished state: the counters are kept per operation too
  [`offset=${SEEK_FROM}&operation=drive_clone,server_clone`, 'jobs_top_owner_last_modified_idx', 2 / 3],
  [`offset=${SEEK_FROM}&operation=drive_clone,server_clone`, 'jobs_top_owner_last_modified_idx', 2 / 3, 'generic'],
  [`offset=${SEEK_FROM}&state=success&operation=server_clone,drive_clone&order_by=last_modified`, 'jobs_top_owner_success_idx', 96 / 97 * 2 / 3],
  [`offset=${DEEP}&order_by=created`, 'jobs_top_owner_created_idx', 1],
  [`offset=${DEEP}&order_by=-created&limit=50`, 'jobs_top_owner_created_idx', 1],
  // filtered in created order, above SEEK_FROM the offset is skipped, in the index alone: it
  // carries each job's state and operation (migration 20261206160000_job_list_created_include)
  [`offset=${Math.floor(DEEP / 3)}&order_by=-created&operation=drive_clone`, 'jobs_top_owner_created_idx', 1 / 3],
  [`offset=${SEEK_FROM - 1}&order_by=created&state=success`, 'jobs_top_owner_created_idx', 96 / 97],
  // finished states seek in created order too, with or without operations (migration
  // 20261206190000_job_list_created_finished), on either plan
  [`offset=${DEEP}&order_by=created&state=success`, 'jobs_top_owner_created_idx', 96 / 97],
  [`offset=${DEEP}&order_by=-created&state=success`, 'jobs_top_owner_created_idx', 96 / 97, 'generic'],
  [`offset=${SEEK_FROM}&order_by=-created&state=error,success&operation=drive_clone,server_clone`, 'jobs_top_owner_created_idx', 2 / 3],
  // operations alone seek in created order too (migration 20261206170000_job_list_created_operations)
  [`offset=${SEEK_FROM}&order_by=-created&operation=drive_clone,server_clone`, 'jobs_top_owner_created_idx', 2 / 3],
  [`offset=${SEEK_FROM}&order_by=created&operation=drive_clone,server_clone`, 'jobs_top_owner_created_idx', 2 / 3, 'generic'],
  [`offset=${Math.floor(DEEP / 3)}&order_by=-created&operation=drive_clone&state=error,success`, 'jobs_top_owner_created_idx', 1 / 3, 'generic']
] as const) {
  // from SEEK_FROM on, the page seeks (each of these filters can)
  const seeks = planOf(q).plan.offset >= SEEK_FROM
  t.test(`?${q}: the ids from an index-only scan of ${index}${seeks ? ' from the bucket holding the offset' : ''}, the table read for the page only${generic ? ', with the generic plan' : ''}`, async t => {
    // one connection, so the statement the app prepared on it can be explained there
    const pool = new pg.Pool({ connectionString: databaseUrl, max: 1, ...(generic ? { options: '-c plan_cache_mode=force_generic_plan' } : {}) })
    t.teardown(() => pool.end())
    // the page statement (the first the list runs) and its values
    const recording = recordFirstStatement(pool)
    const { query, plan } = planOf(q)
    // past the five executions PostgreSQL plans one by one, so the cached plan is the one in use
    for (let i = 0; i < 8; i++) await listJobsSql(recording.pool, alice.id, { ...query }, plan, jobFilters)
    const page = recording.first()
    const { rows: prepared } = await pool.query<{ name: string, generic_plans: string }>('SELECT name, generic_plans FROM pg_prepared_statements WHERE statement = $1', [page?.text])
    t.equal(prepared.length, 1, 'the page statement runs prepared')
    if (generic) t.ok(Number(prepared[0].generic_plans) > 0, `its generic plan is in use (${prepared[0].generic_plans} runs)`)
    // values are a uuid, a state, integers and an array of states: quoted as literals for EXECUTE
    const literals = page!.values.map(v => typeof v === 'number' ? String(v) : Array.isArray(v) ? `'{${v.join(',')}}'` : `'${String(v)}'`).join(', ')
    const explained = (await pool.query(`EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE ${prepared[0].name}(${literals})`)).rows[0]['QUERY PLAN'][0]
    const all = pageNodes(explained.Plan)
    // the scan of jobs that passes over the skipped entries: the one yielding the most rows
    const skip = all.filter(n => n['Relation Name'] === 'jobs').sort((a, b) => b['Actual Rows'] - a['Actual Rows'])[0]
    if (seeks) {
      // the list seeks the ten minutes (of last_modified or created) holding row `offset` by
      // their counters, and skips inside them only, not the offset
      // (the entries a filter passed over count as read: the page's matches are 1 in 1/share of them)
      const read = skip['Actual Rows'] + (skip['Rows Removed by Filter'] ?? 0)
      t.ok(read <= biggestBucket + Math.ceil((plan.take ?? 0) / share) + 5, `the scan reads ${read} entries for offset ${plan.offset}: at most one bucket's (${biggestBucket}) and the page`)
      const counters = q.includes('created') ? q.includes('state=') ? 'job_top_created_finished' : 'job_top_created' : 'job_top_finished'
      t.ok(all.some(n => n['Relation Name'] === counters), `the bucket from the counters (${counters})`)
    } else {
      t.ok(skip['Actual Rows'] >= plan.offset, `the offset is skipped by one scan (${skip['Actual Rows']} rows)`)
    }
    t.equal(skip['Node Type'], 'Index Only Scan', 'an index-only scan')
    t.equal(skip['Index Name'], index, `of ${index}`)
    t.equal(skip['Heap Fetches'], 0, 'that fetches no table row')
    t.notOk(all.some(n => n['Node Type'] === 'Seq Scan'), 'the page scans no table')
    // table rows read: the page's by id and its trees by root_id, not the skipped ones
    const fromTable = all.filter(n => n['Relation Name'] === 'jobs' && n['Node Type'] !== 'Index Only Scan')
      .reduce((sum, n) => sum + n['Actual Rows'] * n['Actual Loops'], 0)
    t.ok(fromTable <= (plan.take ?? 0) * 3, `${fromTable} rows read from the table for a page of ${plan.take}`)
    const count = nodes(explained.Plan).find(isCount)
    t.ok(count, 'the page statement counts too')
    const counted = (count ? nodes(count) : []).filter(n => n['Relation Name'] === 'jobs').reduce((sum, n) => sum + n['Actual Rows'] * n['Actual Loops'], 0)
    // a filtered (windowed) count reads the entries that do not match too, about 1/share per match
    t.ok(counted <= Math.ceil((EXACT_COUNT_UP_TO + 2) / share * 1.05), `the count stops at ${EXACT_COUNT_UP_TO + 1} matches (${counted} entries read of ${TOP})`)
    if (share === 1) {
      // unfiltered: the sum of the account's counters (at most 8 rows), not one job read
      t.equal(counted, 0, 'unfiltered: the count reads no job')
      const sums = (count ? nodes(count) : []).filter(n => n['Relation Name'] === 'job_top_counts')
      t.ok(sums.length > 0 && sums.every(n => n['Actual Rows'] <= 8), `the account's counters instead (${sums.map(n => n['Actual Rows']).join(', ')} rows)`)
    }
  })
}

t.test('deep pages and total_count through the route are those of a plain query', async t => {
  const api = client(app, alice)
  for (const q of [`offset=${DEEP}`, `offset=${DEEP}&state=success`, `offset=${DEEP}&order_by=created`, `offset=${DEEP}&order_by=-created&state=success`, `offset=${DEEP}&order_by=-created&limit=50`, 'state=error&offset=300', `offset=${TOP - 5}`, `offset=${TOP}`]) {
    const { plan } = planOf(q)
    const where = { ...plan.where, ownerId: alice.id, parentId: null }
    const rows = await app.prisma.job.findMany({ where, orderBy: plan.orderBy, skip: plan.offset, take: plan.take })
    const res = await api.get(`/api/2.0/jobs/?${q}`)
    t.equal(res.statusCode, 200)
    const body = res.json()
    t.equal(JSON.stringify(body.objects), JSON.stringify(await loadTrees(app.prisma, rows)), `?${q}: the same jobs, in the same order, with their children`)
    const count = await app.prisma.job.count({ where })
    // unfiltered: the account's top-level jobs, counted exactly at any size (their counters)
    if (count <= EXACT_COUNT_UP_TO || Object.keys(plan.where).length === 0) {
      t.same(body.meta, { limit: plan.limit, offset: plan.offset, total_count: count }, `?${q}: ${count} matches, counted exactly, no flag`)
    } else {
      t.equal(body.meta.total_count_estimated, true, `?${q}: ${count} matches, above ${EXACT_COUNT_UP_TO}: the count is flagged as an estimate`)
      t.ok(Math.abs(body.meta.total_count - count) < count * 0.1, `the estimate ${body.meta.total_count as number} is near ${count}`)
    }
    t.equal(body.objects.length, Math.max(0, Math.min(plan.take ?? Infinity, count - plan.offset)), `?${q}: ${body.objects.length} objects`)
  }
  // the first job from DEEP on (newest first) that has a child: the deep page starting there carries
  // it (one job in five has one, so a fixed page of 20 has none about once in a hundred seeds)
  const { rows: [first] } = await app.dbPool.query<{ o: string }>(`SELECT o FROM (
    SELECT id, row_number() OVER (ORDER BY last_modified DESC, id) - 1 AS o FROM jobs WHERE owner_id = $1 AND parent_id IS NULL) x
    WHERE o >= $2 AND EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = x.id) ORDER BY o LIMIT 1`, [alice.id, DEEP])
  const page = (await api.get(`/api/2.0/jobs/?offset=${first.o}`)).json()
  t.ok(page.objects[0].children.length > 0, `the deep page at offset ${first.o} carries its first job's children`)
})
