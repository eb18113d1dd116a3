// The claim runs on partial indexes: with 100,000 parked jobs (run_at a year out) and held jobs
// (leased to requests) in the table, its plan reaches jobs only through the runnable-job indexes
// and never scans the table; and it still claims the one due job.
import t from 'tap'
import pg from 'pg'
import { enqueueJob } from '../../src/engine/enqueue.ts'
import { CLAIM_SQL, claimJobs } from '../../src/engine/queue-sql.ts'
import { buildTestApp, createUser } from '../helpers/app.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
// the engine's pool plans its statements once, for any values (src/engine/engine.ts): so do these
const GENERIC = '-c plan_cache_mode=force_generic_plan'
const alice = await createUser(app)

t.test('the claim uses the partial indexes with 100,000 parked jobs present', async t => {
  const db = new pg.Client({ connectionString: databaseUrl, options: GENERIC })
  await db.connect()
  t.teardown(() => db.end())
  await db.query(`
    INSERT INTO jobs (id, owner_id, operation, state, root_id, run_at, last_modified)
    SELECT g.id, $1, 'drive_download', 'queued', g.id, now() + interval '365 days', now()
    FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, 100000)) g`, [alice.id])
  await db.query(`
    INSERT INTO jobs (id, owner_id, operation, state, root_id, run_at, locked_by, locked_until, attempts, last_modified)
    SELECT g.id, $1, 'drive_upload', 'started', g.id, now() + interval '365 days', 'some-process:held', now() + interval '30 seconds', 1, now()
    FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, 5000)) g`, [alice.id])
  await db.query('ANALYZE jobs')
  const due = await app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation: 'drive_resize' }))

  await db.query(`PREPARE claim(text, int, int, uuid[]) AS ${CLAIM_SQL}`)
  const plan = (await db.query("EXPLAIN (FORMAT TEXT) EXECUTE claim('w', 30, 4, '{}')")).rows.map(r => r['QUERY PLAN'] as string).join('\n')
  t.comment(plan.split('\n').filter(l => /Scan using/.test(l)).join('\n'))
  t.match(plan, /jobs_due_idx/, 'due jobs through the due index')
  t.match(plan, /jobs_cancel_idx/, 'cancelled jobs through the cancel index')
  t.match(plan, /jobs_lease_idx/, 'expired leases through the lease index')
  t.notMatch(plan, /Seq Scan on jobs/, 'the jobs table is never scanned')

  // the plan actually executed: few rows touched, not the parked ones (rolled back)
  await db.query('BEGIN')
  const analyzed = (await db.query("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE claim('w', 30, 4, '{}')")).rows[0]['QUERY PLAN'][0]
  await db.query('ROLLBACK')
  t.comment(`claim with 105,000 parked/held jobs: ${analyzed['Execution Time'] as number} ms`)
  const scanned = rowsRead(analyzed.Plan)
  t.ok(scanned < 1000, `the claim read ${scanned} rows, not the 105,000 parked ones`)

  const claimed = await claimJobs(app.prisma, 'w', 30, 4)
  t.same(claimed.map(r => r.id), [due.id], 'the due job is claimed, no parked or held one')
})

t.test('a claim reads about as many due jobs as it takes, not the whole queue', async t => {
  const db = new pg.Client({ connectionString: databaseUrl, options: GENERIC })
  await db.connect()
  t.teardown(() => db.end())
  await db.query(`
    INSERT INTO jobs (id, owner_id, operation, state, root_id, run_at, created, last_modified)
    SELECT g.id, $1, 'drive_resize', 'queued', g.id, now() - interval '1 minute', now(), now()
    FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, 20000)) g`, [alice.id])
  await db.query('ANALYZE jobs')
  await db.query(`PREPARE claim2(text, int, int, uuid[]) AS ${CLAIM_SQL}`)
  await db.query('BEGIN')
  const analyzed = (await db.query("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE claim2('w', 30, 4, '{}')")).rows[0]['QUERY PLAN'][0]
  await db.query('ROLLBACK')
  t.comment(`claim of 4 with 20,000 due jobs: ${analyzed['Execution Time'] as number} ms`)
  const scanned = rowsRead(analyzed.Plan)
  t.ok(scanned < 100, `the claim read ${scanned} rows, not the 20,000 due ones`)
})

/** Rows produced by every scan node of a JSON plan (a seq scan of the parked jobs would be 100,000). */
function rowsRead (node: { 'Node Type': string, 'Actual Rows': number, 'Actual Loops': number, Plans?: unknown[] }): number {
  const own = /Scan/.test(node['Node Type']) ? node['Actual Rows'] * node['Actual Loops'] : 0
  return own + (node.Plans ?? []).reduce<number>((n, p) => n + rowsRead(p as typeof node), 0)
}
