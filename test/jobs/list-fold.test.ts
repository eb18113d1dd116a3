// The jobs list's finished-job counters that transactions write into rows of their own
// (job_top_finished_tx, job_top_created_finished_tx) are folded on their own schedule
// (LIST_FOLD_SECONDS) in every worker process, not only by the purge (PURGE_CRON): a rare purge
// would leave every deep page summing all of them (issue 18). One fold at a time: the schedule's fold skips while another holds the
// fold lock, the purge's waits for it.
import t, { type Test } from 'tap'
import pg from 'pg'
import type { FastifyInstance } from 'fastify'
import { FOLD_LOCK_KEY, foldListCounters } from '../../src/engine/queue-sql.ts'
import { buildTestApp, createUser } from '../helpers/app.ts'
import { listCountersAgree } from '../helpers/list-counters.ts'

/** `n` finished top-level jobs of `owner` over the last two hours, in one statement (one transaction's counter rows) */
async function finished (app: FastifyInstance, owner: string, n: number): Promise<void> {
  await app.dbPool.query(`
    INSERT INTO jobs (id, owner_id, root_id, operation, state, progress, created, last_modified, finished_at)
    SELECT x.id, $1::uuid, x.id, 'drive_clone', (ARRAY['success', 'error', 'cancelled'])[1 + i % 3], 100,
      now() - make_interval(mins => i % 120), now() - make_interval(mins => i % 120), now() - make_interval(mins => i % 120)
    FROM (SELECT gen_random_uuid() AS id, i FROM generate_series(1, $2::int) AS i) x`, [owner, n])
}

// by last_modified and by created (job_top_created_finished_tx)
const txRows = async (app: FastifyInstance): Promise<number> =>
  Number((await app.dbPool.query<{ n: string }>('SELECT (SELECT count(*) FROM job_top_finished_tx) + (SELECT count(*) FROM job_top_created_finished_tx) AS n')).rows[0].n)

/** polls until there is no transaction's row left, up to `ms`; whether that happened */
async function foldedWithin (app: FastifyInstance, ms: number): Promise<boolean> {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (await txRows(app) === 0) return true
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  return false
}

t.test('a worker process folds the counters every LIST_FOLD_SECONDS, with the purge a year away', async (t: Test) => {
  const { app } = await buildTestApp(t, { runWorkers: true, config: { listFoldSeconds: 1, purgeCron: '0 0 1 1 *' } })
  const user = await createUser(app)
  for (let i = 0; i < 4; i++) await finished(app, user.id, 150)
  t.ok(await txRows(app) > 0, 'the transactions counted into rows of their own')
  t.ok(await foldedWithin(app, 10_000), 'within seconds every such row is folded')
  const buckets = await listCountersAgree(t, app.dbPool, 'after the scheduled fold')
  const kept = await app.dbPool.query<{ rows: string, n: string }>('SELECT count(*) AS rows, sum(n) AS n FROM job_top_finished WHERE owner_id = $1', [user.id])
  t.same(kept.rows[0], { rows: String(buckets), n: '600' }, 'one row per bucket and state, summing to the 600 jobs')
  const byCreated = await app.dbPool.query<{ n: string }>('SELECT sum(n) AS n FROM job_top_created_finished WHERE owner_id = $1', [user.id])
  t.equal(byCreated.rows[0].n, '600', 'and by created')
  // and again: the schedule goes on after a fold
  await finished(app, user.id, 30)
  t.ok(await foldedWithin(app, 10_000), 'the next transaction\'s rows are folded too')
  await listCountersAgree(t, app.dbPool, 'after the next fold')
})

t.test('one fold at a time: the schedule\'s skips, the purge\'s waits', async (t: Test) => {
  const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
  const user = await createUser(app)
  await finished(app, user.id, 90)
  const holder = new pg.Client({ connectionString: databaseUrl })
  await holder.connect()
  t.teardown(() => holder.end())
  await holder.query('BEGIN')
  await holder.query('SELECT pg_advisory_xact_lock($1::int8)', [FOLD_LOCK_KEY])
  t.equal(await foldListCounters(app.prisma), undefined, 'while another holds the fold lock, a scheduled fold does nothing')
  t.ok(await txRows(app) > 0, 'and leaves the transactions\' rows')
  let done = false
  const waiting = foldListCounters(app.prisma, { wait: true }).finally(() => { done = true })
  await new Promise(resolve => setTimeout(resolve, 500))
  t.notOk(done, 'the purge\'s fold waits for the lock')
  await holder.query('COMMIT')
  const r = await waiting
  t.ok(r !== undefined && r.folded > 0, `then folds (${r?.folded ?? 0} rows)`)
  t.equal(await txRows(app), 0, 'every row')
  await listCountersAgree(t, app.dbPool, 'after the waiting fold')
  t.same(await foldListCounters(app.prisma), { folded: 0, emptied: 0 }, 'a fold with nothing to fold folds nothing')
})
