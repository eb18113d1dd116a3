// The per-account counters of top-level jobs (job_top_counts, kept by triggers on jobs; issue 18):
// they equal a count of the jobs through every way jobs are written and deleted (the API, bulk
// and mixed-owner enqueues, children, the purge, removing an account, a moved row, TRUNCATE),
// from many connections at once (and so do the deep pages' bucket counters, job_top_finished and
// job_top_created); a transaction holding one shard does not stop another
// transaction of the same account; the migration counts the jobs already there; and the unfiltered
// /jobs/ total they give is exact at any size, on offset and cursor pages.
import t, { type Test } from 'tap'
import { randomUUID } from 'node:crypto'
import pg from 'pg'
import { runMigrations } from '../../src/db/migrate.ts'
import { enqueueJobs } from '../../src/engine/enqueue.ts'
import { purgeBatch } from '../../src/engine/queue-sql.ts'
import { removeAccount } from '../../src/features/accounts/service.ts'
import { EXACT_COUNT_UP_TO } from '../../src/http/list-sql.ts'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { listCountersAgree } from '../helpers/list-counters.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const bob = await createUser(app)

/** owner → top-level jobs, as the counters say and as the table says (owners with none left out) */
async function counts () {
  const q = async (sql: string) => Object.fromEntries((await app.dbPool.query<{ o: string, n: string }>(sql)).rows.map(r => [r.o, Number(r.n)]))
  return {
    counters: await q('SELECT owner_id::text AS o, sum(n) AS n FROM job_top_counts GROUP BY owner_id HAVING sum(n) <> 0'),
    table: await q('SELECT owner_id::text AS o, count(*) AS n FROM jobs WHERE parent_id IS NULL GROUP BY owner_id')
  }
}

async function agree (t: Test, what: string) {
  const c = await counts()
  t.same(c.counters, c.table, `${what}: the counters equal the count (${JSON.stringify(Object.values(c.table))})`)
  // and the deep pages' bucket counters (job_top_finished, job_top_created)
  await listCountersAgree(t, app.dbPool, what)
  return c.table
}

const total = async (user: typeof alice, q = '') => (await client(app, user).get(`/api/2.0/jobs/?limit=1${q}`)).json().meta

t.test('the counters follow every way jobs are written and deleted', async t => {
  t.same(await agree(t, 'at first'), {}, 'no job yet')
  // the API: drive creates (one statement per request, its own transaction)
  for (let i = 0; i < 3; i++) t.equal((await client(app, alice).post('/api/2.0/drives/', { objects: [{ name: `d${i}`, size: 1 << 20, media: 'disk' }, { name: `e${i}`, size: 1 << 20, media: 'disk' }] })).statusCode, 201)
  t.same(await agree(t, 'six drive creates'), { [alice.id]: 6 })
  // a bulk enqueue with parents and their children, and rows of two owners in one statement
  const parent = randomUUID()
  await enqueueJobs(app.dbPool, [
    { id: parent, ownerId: alice.id, operation: 'server_clone' },
    { ownerId: alice.id, operation: 'drive_clone', parentId: parent },
    { ownerId: alice.id, operation: 'drive_clone', parentId: parent },
    { ownerId: bob.id, operation: 'drive_clone' },
    { ownerId: bob.id, operation: 'drive_clone' }
  ])
  // children alone, added to a parent written before
  await enqueueJobs(app.dbPool, [{ ownerId: alice.id, operation: 'drive_clone', parentId: parent }])
  t.same(await agree(t, 'a mixed batch and children'), { [alice.id]: 7, [bob.id]: 2 }, 'children are not counted')
  t.same(await total(alice), { limit: 1, offset: 0, total_count: 7 }, 'the list says the same')
  t.same(await total(bob), { limit: 1, offset: 0, total_count: 2 }, 'each account its own')

  // a statement that fails writes nothing, counters included
  await t.rejects(enqueueJobs(app.dbPool, [{ ownerId: alice.id, operation: 'drive_clone' }, { ownerId: alice.id, operation: 'drive_clone', parentId: randomUUID() }]), 'a parent that does not exist fails the batch')
  await agree(t, 'after a failed batch')
  // a transaction rolled back leaves no count behind
  const c = await app.dbPool.connect()
  await c.query('BEGIN')
  await enqueueJobs(c, [{ ownerId: bob.id, operation: 'drive_clone' }])
  await c.query('ROLLBACK')
  c.release()
  t.same((await agree(t, 'after a rollback'))[bob.id], 2)

  // the purge: old finished trees, parent with its children, across owners in one statement
  await app.dbPool.query("UPDATE jobs SET state = 'success', finished_at = now() - interval '4 days' WHERE root_id = $1 OR (owner_id = $2 AND parent_id IS NULL)", [parent, bob.id])
  t.equal(await purgeBatch(app.prisma, new Date(Date.now() - 3 * 86_400_000), 100), 3, 'three trees purged')
  t.same(await agree(t, 'after the purge'), { [alice.id]: 6 })

  // a row moved out of the top level and back, and to another owner (the service never does this)
  const [one] = (await app.dbPool.query<{ id: string }>('SELECT id FROM jobs WHERE owner_id = $1 AND parent_id IS NULL LIMIT 1', [alice.id])).rows
  const [other] = (await app.dbPool.query<{ id: string }>('SELECT id FROM jobs WHERE owner_id = $1 AND parent_id IS NULL AND id <> $2 LIMIT 1', [alice.id, one.id])).rows
  await app.dbPool.query('UPDATE jobs SET parent_id = $2 WHERE id = $1', [one.id, other.id])
  t.same(await agree(t, 'a job made a child'), { [alice.id]: 5 })
  await app.dbPool.query('UPDATE jobs SET parent_id = NULL, owner_id = $2 WHERE id = $1', [one.id, bob.id])
  t.same(await agree(t, 'back to the top, of another owner'), { [alice.id]: 5, [bob.id]: 1 })
  await app.dbPool.query('UPDATE jobs SET owner_id = $2 WHERE id = $1', [one.id, alice.id])
  await app.dbPool.query("UPDATE jobs SET progress = 50, state = 'started', last_modified = now() WHERE owner_id = $1", [alice.id])
  t.same(await agree(t, 'back to its owner, and updates of other columns'), { [alice.id]: 6 })

  // removing an account deletes its jobs, and their count with them
  await removeAccount(app.prisma, bob.email)
  t.same(await agree(t, 'bob removed'), { [alice.id]: 6 })
  // TRUNCATE (an operator's reset) empties the counters too
  await app.dbPool.query('TRUNCATE jobs CASCADE')
  t.same(await agree(t, 'after TRUNCATE'), {})
  t.same((await app.dbPool.query('SELECT count(*)::int AS n FROM job_top_counts')).rows[0].n, 0, 'no counter row left')
  t.same(await total(alice), { limit: 1, offset: 0, total_count: 0 })
})

t.test('concurrent enqueues and deletes of one account from many connections stay exact, on at most 8 rows', async t => {
  const carol = await createUser(app)
  const api = client(app, carol)
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 12 })
  t.teardown(() => pool.end())
  // 60 creates through the API, 30 single enqueues and 30 deletes of the account's own jobs, interleaved
  await Promise.all(Array.from({ length: 30 }, (_, i) => enqueueJobs(pool, [{ ownerId: carol.id, operation: 'drive_clone', description: `x${i}` }])))
  const work: Array<Promise<unknown>> = []
  for (let i = 0; i < 30; i++) {
    work.push(api.post('/api/2.0/drives/', { objects: [{ name: `c${i}`, size: 1 << 20, media: 'disk' }, { name: `f${i}`, size: 1 << 20, media: 'disk' }] }).then(r => t.equal(r.statusCode, 201)))
    work.push(enqueueJobs(pool, [{ ownerId: carol.id, operation: 'drive_clone', description: `y${i}` }]))
    work.push(pool.query('DELETE FROM jobs WHERE owner_id = $1 AND description = $2', [carol.id, `x${i}`]))
    // and finishes of the account's jobs, each in its own transaction (job_top_finished_tx)
    work.push(pool.query("UPDATE jobs SET state = 'success', finished_at = now(), last_modified = now() WHERE owner_id = $1 AND description = $2", [carol.id, `y${i}`]))
  }
  await Promise.all(work)
  t.same((await agree(t, 'after the storm'))[carol.id], 90, '60 creates + 30 enqueues')
  const rows = (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM job_top_counts WHERE owner_id = $1', [carol.id])).rows[0].n
  t.ok(rows >= 1 && rows <= 8, `the account's counters are ${rows} rows`)
  t.same(await total(carol), { limit: 1, offset: 0, total_count: 90 })
})

t.test('a transaction holding its shard does not hold up another transaction of the same account', async t => {
  const dave = await createUser(app)
  const holder = new pg.Client({ connectionString: databaseUrl })
  const other = new pg.Client({ connectionString: databaseUrl })
  await holder.connect()
  await other.connect()
  t.teardown(async () => { await holder.end(); await other.end() })
  await holder.query('BEGIN')
  const shard = Number((await holder.query<{ s: string }>('SELECT txid_current() % 8 AS s')).rows[0].s)
  await enqueueJobs(holder, [{ ownerId: dave.id, operation: 'drive_clone' }])
  // a transaction on another shard: its enqueue must not wait for the holder's row lock
  await other.query("SET statement_timeout = '3s'")
  let tries = 0
  for (;;) {
    await other.query('BEGIN')
    if (Number((await other.query<{ s: string }>('SELECT txid_current() % 8 AS s')).rows[0].s) !== shard) break
    await other.query('ROLLBACK')
    t.ok(++tries < 20, 'another shard is found')
  }
  await enqueueJobs(other, [{ ownerId: dave.id, operation: 'drive_clone' }])
  await other.query('COMMIT')
  t.pass('the second enqueue committed while the first transaction still held its counter')
  t.same(await total(dave), { limit: 1, offset: 0, total_count: 1 }, 'the list sees the committed job only')
  await holder.query('COMMIT')
  t.same(await total(dave), { limit: 1, offset: 0, total_count: 2 }, 'then both')
  await agree(t, 'at the end')
})

t.test('unfiltered totals are exact beyond the cap, on offset and cursor pages; filtered ones flagged as before', async t => {
  const erin = await createUser(app)
  const n = EXACT_COUNT_UP_TO + 37
  await app.dbPool.query(`INSERT INTO jobs (id, owner_id, operation, state, root_id)
    SELECT u, $1::uuid, 'drive_clone', 'success', u FROM (SELECT gen_random_uuid() AS u FROM generate_series(1, $2::int)) g`, [erin.id, n])
  // children do not count
  await app.dbPool.query(`INSERT INTO jobs (id, owner_id, operation, state, parent_id, root_id)
    SELECT gen_random_uuid(), $1::uuid, 'drive_clone', 'success', id, id FROM jobs WHERE owner_id = $1 AND parent_id IS NULL LIMIT 100`, [erin.id])
  await app.dbPool.query('ANALYZE jobs')
  t.same(await total(erin, '&offset=5'), { limit: 1, offset: 5, total_count: n }, 'offset page: exact, not flagged')
  const cursor = (await client(app, erin).get('/api/2.0/jobs/?cursor=&limit=1')).json().meta
  t.equal(cursor.total_count, n, 'cursor page: exact, beyond the cap')
  t.notOk('total_count_estimated' in cursor, 'not flagged')
  const filtered = await total(erin, '&state=success')
  t.equal(filtered.total_count_estimated, true, 'a filter matching more than the cap: an estimate, flagged')
  await agree(t, 'after the bulk load')
})

t.test('the migration counts the jobs already there', async t => {
  const frank = await createUser(app)
  const grace = await createUser(app)
  await enqueueJobs(app.dbPool, [
    { ownerId: frank.id, operation: 'drive_clone' }, { ownerId: frank.id, operation: 'drive_clone' }, { ownerId: grace.id, operation: 'drive_clone' }
  ])
  const before = await counts()
  // the database as it was before the migration: no counters, no triggers, the migration not applied
  await app.dbPool.query(`DROP TABLE job_top_counts;
    DROP FUNCTION job_top_counts_written, job_top_counts_moved, job_top_counts_truncated CASCADE;
    DELETE FROM _prisma_migrations WHERE migration_name LIKE '%_job_top_counts'`)
  await app.dbPool.query("INSERT INTO jobs (id, owner_id, operation, root_id) SELECT u, $1::uuid, 'drive_clone', u FROM (SELECT gen_random_uuid() AS u) g", [grace.id])
  t.same(await runMigrations(databaseUrl), ['20261204140000_job_top_counts'], 'applied again')
  const after = await counts()
  t.same(after.counters, after.table, 'the counters equal the count')
  t.equal(after.table[grace.id], before.table[grace.id] + 1, 'the job written meanwhile is counted')
  t.same(await total(grace), { limit: 1, offset: 0, total_count: 2 })
  await enqueueJobs(app.dbPool, [{ ownerId: frank.id, operation: 'drive_clone' }])
  t.same(await total(frank), { limit: 1, offset: 0, total_count: 3 }, 'and the triggers run again')
})
