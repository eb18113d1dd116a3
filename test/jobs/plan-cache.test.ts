// The first jobs page of the default size keeps PostgreSQL's generic plan where one account holds
// nearly every job (issue 18). With LIMIT and OFFSET as parameters, the generic plan assumed the
// page fetched a tenth of the account's jobs, looked dearer than planning anew, and the connection
// planned the statement on every request (custom_plans grew, generic_plans stayed 0: 0.69 ms of
// planning for 0.39 ms of execution at 8,000 jobs). pageToSql writes the default page as literals.
import t from 'tap'
import pg from 'pg'
import { jobFilters, jobOrder, keysetOf } from '../../src/features/jobs/routes.ts'
import { listJobsSql } from '../../src/features/jobs/read-sql.ts'
import { planList } from '../../src/http/listing.ts'
import { JOB_FIELDS } from '../../src/features/jobs/schemas.ts'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { recordFirstStatement } from '../helpers/db.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
await app.dbPool.query(`INSERT INTO jobs (id, owner_id, operation, state, root_id, progress, created, last_modified, finished_at)
  SELECT u, $1::uuid, 'drive_clone', 'success', u, 100, ts, ts, ts
  FROM (SELECT gen_random_uuid() AS u, now() - (i * interval '20 seconds') AS ts FROM generate_series(1, 8000) i) g`, [alice.id])
await app.dbPool.query('VACUUM ANALYZE jobs')

for (const [q, generic] of [['', true], ['limit=50', false], ['offset=40', false]] as const) {
  t.test(`?${q}: ${generic ? 'the generic plan is kept' : 'a page of another size or offset still answers, planned as PostgreSQL chooses'}`, async t => {
    const pool = new pg.Pool({ connectionString: databaseUrl, max: 1 })
    t.teardown(() => pool.end())
    const query = Object.fromEntries([...new URLSearchParams(q)].map(([k, v]) => [k, Number(v)]))
    const plan = planList(query, jobFilters, jobOrder, JOB_FIELDS)
    keysetOf(plan) // the route's id tiebreak, opposite to a date order
    const recording = recordFirstStatement(pool)
    // PostgreSQL compares the generic plan with the custom ones after five executions
    for (let i = 0; i < 10; i++) {
      const { meta, objects } = await listJobsSql(recording.pool, alice.id, { ...query }, plan, jobFilters) as { meta: { total_count: number }, objects: unknown[] }
      t.equal(objects.length, plan.take, 'a whole page') || t.bailout()
      t.equal(meta.total_count, 8000)
    }
    const { rows } = await pool.query<{ generic_plans: string, custom_plans: string }>('SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1', [recording.first()?.text])
    t.equal(rows.length, 1, 'the page statement runs prepared')
    if (generic) {
      t.ok(Number(rows[0].generic_plans) >= 5, `the generic plan runs (${rows[0].generic_plans} generic, ${rows[0].custom_plans} custom)`)
      t.ok(Number(rows[0].custom_plans) <= 5, 'planned anew only for the first executions')
    }
  })
}

t.test('the route answers the same first page either way', async t => {
  const api = client(app, alice)
  const a = (await api.get('/api/2.0/jobs/')).json()
  const b = (await api.get('/api/2.0/jobs/?limit=20&offset=0')).json()
  const c = (await api.get('/api/2.0/jobs/?limit=21&offset=0')).json()
  t.same(a, b)
  t.same(a.objects, c.objects.slice(0, 20), 'the 21-job page starts with the same 20')
  t.same(a.meta, { limit: 20, offset: 0, total_count: 8000 })
})
