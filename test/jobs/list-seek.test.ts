// Deep offset pages of the /jobs/ list seek the ten minutes of their order's date holding their
// first row (issue 18): job_top_finished counts each account's finished top-level jobs per bucket
// of last_modified, state and operation, job_top_created_finished the same per bucket of created,
// job_top_created every top-level job per bucket of created and operation (all kept by triggers);
// the open ones are read from jobs_top_open_idx. Checked
// against the plain query, in both directions of both orders, unfiltered and by state, operation
// or both, at every kind of offset (a bucket's first and last row, the last row, past the end), on jobs open
// and finished, with children and another account, before and after what moves rows between
// buckets: jobs finishing now, failing, being cancelled or deleted, new ones; the counters equal a
// count of the jobs; transactions finishing jobs never wait for each other's counters; the purge
// folds the transactions' counts and deletes the buckets it emptied; and the migrations count the
// jobs already there.
import t, { type Test } from 'tap'
import pg from 'pg'
import { runMigrations } from '../../src/db/migrate.ts'
import { enqueueJobs } from '../../src/engine/enqueue.ts'
import { purgeOnce } from '../../src/engine/purge.ts'
import { SEEK_FROM } from '../../src/features/jobs/read-sql.ts'
import { buildTestApp, client, createUser, type TestUser } from '../helpers/app.ts'
import { listCountersAgree } from '../helpers/list-counters.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const bob = await createUser(app)
const TOP = SEEK_FROM + 6_000

// `n` top-level jobs over about 20 hours of last_modified (with ties), one in seven still open,
// one in five with a child, most of them drive clones (so an operation's list goes deep too);
// minutes from now back
async function seed (owner: string, n: number, salt: number) {
  await app.dbPool.query(`
    INSERT INTO jobs (id, owner_id, root_id, operation, state, progress, created, last_modified, finished_at)
    SELECT x.id, $1::uuid, x.id, CASE WHEN i % 11 = 0 THEN 'drive_create' WHEN i % 13 = 0 THEN 'server_clone' ELSE 'drive_clone' END,
      (ARRAY['queued', 'success', 'success', 'error', 'started', 'cancelled', 'success'])[1 + (i * $3::int) % 7], 100,
      now() - make_interval(secs => i / 2 * 2), now() - make_interval(secs => ((i * 7919 + $3::int) % $2::int) * 3 / 2),
      CASE WHEN (i * $3::int) % 7 IN (0, 4) THEN NULL ELSE now() END
    FROM (SELECT gen_random_uuid() AS id, i FROM generate_series(1, $2::int) AS i) x`, [owner, n, salt])
  await app.dbPool.query(`
    INSERT INTO jobs (id, owner_id, root_id, parent_id, operation, state, progress, created, last_modified)
    SELECT gen_random_uuid(), owner_id, id, id, 'drive_clone', state, 100, created, last_modified
    FROM jobs WHERE owner_id = $1 AND parent_id IS NULL AND abs(hashtext(id::text)) % 5 = 0`, [owner])
}
await seed(alice.id, TOP, 3)
await seed(bob.id, 3_000, 5)
await app.dbPool.query('VACUUM ANALYZE jobs')

/** the list's bucket counters against a count of the jobs */
const agree = (t: Test, what: string) => listCountersAgree(t, app.dbPool, what)

type Filter = [states: string[] | undefined, operations: string[] | undefined]
// finished states, operations or both (which seek, in either order), and open states (which skip)
const FILTERS: Filter[] = [[['success'], undefined], [['error', 'cancelled'], undefined], [['started'], undefined],
  [undefined, ['drive_clone']], [undefined, ['drive_create', 'server_clone', 'drive_clone']], [['success', 'error', 'cancelled'], ['drive_clone']],
  [['success', 'error'], ['drive_clone', 'server_clone']], [['started', 'queued'], ['drive_clone']]]
const EVERY = ['queued', 'started', 'cancelling', 'success', 'error', 'cancelled', 'drive_clone', 'drive_create', 'server_clone', 'drive_resize']

/** filtered pages of the route against the plain query, at a third and two thirds of their matches and the last */
async function filteredPagesAgree (t: Test, user: TestUser, what: string, orderBy: string, order: string, filters = FILTERS) {
  for (const [states, operations] of filters) {
    const filter = [states === undefined ? '' : `state=${states.join(',')}`, operations === undefined ? '' : `operation=${operations.join(',')}`].filter(Boolean).join('&')
    const where = 'owner_id = $1 AND parent_id IS NULL AND state = ANY ($2) AND operation = ANY ($3)'
    const matches = Number((await app.dbPool.query<{ n: string }>(`SELECT count(*) AS n FROM jobs WHERE ${where}`, [user.id, states ?? EVERY, operations ?? EVERY])).rows[0].n)
    for (const offset of [Math.max(SEEK_FROM, Math.floor(matches / 3)), Math.max(SEEK_FROM, Math.floor(matches * 2 / 3)), matches - 1]) {
      const plain = (await app.dbPool.query<{ id: string }>(`SELECT id FROM jobs WHERE ${where}
        ORDER BY ${order} OFFSET $4 LIMIT $5`, [user.id, states ?? EVERY, operations ?? EVERY, offset, 20])).rows.map(r => r.id)
      const res = await client(app, user).get(`/api/2.0/jobs/?order_by=${orderBy}&${filter}&offset=${offset}`)
      t.equal(res.statusCode, 200)
      t.same(res.json().objects.map((o: { uuid: string }) => o.uuid), plain, `${what}, order_by=${orderBy}, ${filter} (${matches}), offset ${offset}: the plain query's ${plain.length} jobs`)
    }
  }
}

/** the list's orders (order_by) as the plain query writes them */
const ORDERS = [['-last_modified', 'last_modified DESC, id'], ['last_modified', 'last_modified ASC, id DESC'], ['-created', 'created DESC, id'], ['created', 'created ASC, id DESC']]

/** the page of the route against the plain query, for each offset, in both directions */
async function pagesAgree (t: Test, user: TestUser, what: string, offsets: number[]) {
  const total = Number((await app.dbPool.query<{ n: string }>('SELECT count(*) AS n FROM jobs WHERE owner_id = $1 AND parent_id IS NULL', [user.id])).rows[0].n)
  for (const [orderBy, order] of ORDERS) {
    for (const offset of offsets) {
      for (const limit of [20, 3]) {
        const plain = (await app.dbPool.query<{ id: string }>(`SELECT id FROM jobs WHERE owner_id = $1 AND parent_id IS NULL
          ORDER BY ${order} OFFSET $2 LIMIT $3`, [user.id, offset, limit])).rows.map(r => r.id)
        const res = await client(app, user).get(`/api/2.0/jobs/?order_by=${orderBy}&offset=${offset}&limit=${limit}`)
        t.equal(res.statusCode, 200)
        const body = res.json()
        t.same(body.objects.map((o: { uuid: string }) => o.uuid), plain, `${what}, order_by=${orderBy}, offset ${offset}, limit ${limit}: the plain query's ${plain.length} jobs`)
        t.same(body.meta, { limit, offset, total_count: total }, 'and its exact total')
      }
    }
    await filteredPagesAgree(t, user, what, orderBy, order)
  }
  return total
}

/** offsets where buckets start and end in the list's newest-first orders (of the user's jobs), and the far end */
async function edges (t: Test, user: TestUser): Promise<number[]> {
  const offsets = [SEEK_FROM]
  for (const column of ['last_modified', 'created']) {
    const { rows } = await app.dbPool.query<{ before: string }>(`SELECT (sum(n) OVER (ORDER BY b DESC) - n) AS before FROM (
      SELECT job_list_bucket(${column}) AS b, count(*) AS n FROM jobs WHERE owner_id = $1 AND parent_id IS NULL GROUP BY 1) g`, [user.id])
    const starts = rows.map(r => Number(r.before)).filter(n => n >= SEEK_FROM)
    t.ok(starts.length >= 3, `${starts.length} buckets of ${column} start past ${SEEK_FROM}`)
    offsets.push(starts[0], starts[0] - 1, starts[1] + 7, starts[starts.length - 1])
  }
  const total = Number((await app.dbPool.query<{ n: string }>('SELECT count(*) AS n FROM jobs WHERE owner_id = $1 AND parent_id IS NULL', [user.id])).rows[0].n)
  return [...offsets, total - 1, total - 2, total, total + 50]
}

t.test('deep pages are those of the plain query, in both directions, as jobs finish, fail and go', async t => {
  await agree(t, 'after the seed')
  const buckets = Number((await app.dbPool.query<{ n: string }>('SELECT count(DISTINCT bucket) AS n FROM (SELECT owner_id, bucket, state, n FROM job_top_finished UNION ALL SELECT owner_id, bucket, state, n FROM job_top_finished_tx) f WHERE owner_id = $1', [alice.id])).rows[0].n)
  t.ok(buckets > 50, `alice's jobs span ${buckets} buckets`)
  await pagesAgree(t, alice, 'as seeded', await edges(t, alice))

  // open jobs finish now (the service's finish: state and last_modified in one update), fail or are
  // cancelled; others start and progress (their last_modified moves, and they stay open)
  await app.dbPool.query(`UPDATE jobs SET state = 'success', finished_at = now(), last_modified = now()
    WHERE id IN (SELECT id FROM jobs WHERE owner_id = $1 AND parent_id IS NULL AND state = 'queued' ORDER BY id LIMIT 400)`, [alice.id])
  await app.dbPool.query(`UPDATE jobs SET state = 'error', finished_at = now(), last_modified = now()
    WHERE id IN (SELECT id FROM jobs WHERE owner_id = $1 AND parent_id IS NULL AND state = 'started' ORDER BY id LIMIT 300)`, [alice.id])
  await app.dbPool.query(`UPDATE jobs SET state = 'started', progress = 40, last_modified = now()
    WHERE id IN (SELECT id FROM jobs WHERE owner_id = $1 AND parent_id IS NULL AND state = 'queued' ORDER BY id LIMIT 200)`, [alice.id])
  await app.dbPool.query(`UPDATE jobs SET state = 'cancelled', finished_at = now(), last_modified = now() - interval '3 hours'
    WHERE id IN (SELECT id FROM jobs WHERE owner_id = $1 AND parent_id IS NULL AND state = 'started' ORDER BY id LIMIT 50)`, [alice.id])
  // deleted trees (as the purge and a cancelled create do), finished and open
  await app.dbPool.query('DELETE FROM jobs WHERE root_id IN (SELECT id FROM jobs WHERE owner_id = $1 AND parent_id IS NULL ORDER BY created LIMIT 900)', [alice.id])
  // a finished job moved to another bucket, made a child and back, its state changed (the service does none of these)
  const [one] = (await app.dbPool.query<{ id: string }>('SELECT id FROM jobs WHERE owner_id = $1 AND parent_id IS NULL AND state = \'success\' ORDER BY id LIMIT 1', [alice.id])).rows
  await app.dbPool.query("UPDATE jobs SET last_modified = last_modified - interval '7 hours', created = created - interval '5 hours' WHERE id = $1", [one.id])
  await app.dbPool.query('UPDATE jobs SET parent_id = (SELECT id FROM jobs WHERE owner_id = $2 AND parent_id IS NULL AND id <> $1 LIMIT 1) WHERE id = $1', [one.id, alice.id])
  await agree(t, 'a finished job made a child')
  await app.dbPool.query("UPDATE jobs SET parent_id = NULL, state = 'error' WHERE id = $1", [one.id])
  await agree(t, 'back to the top, failed instead of successful')
  await app.dbPool.query("UPDATE jobs SET operation = 'drive_resize' WHERE id = $1", [one.id])
  await agree(t, 'another operation')
  // new jobs, finished and open, in one statement with bob's
  await seed(alice.id, 500, 11)
  await agree(t, 'after the updates and deletes')
  await pagesAgree(t, alice, 'after them', await edges(t, alice))
  await pagesAgree(t, bob, 'bob, below the seek', [0, 2_990, 3_000])
})

t.test('transactions finishing jobs of two accounts in opposite orders neither wait for each other nor deadlock', async t => {
  const dan = await createUser(app)
  const eve = await createUser(app)
  await enqueueJobs(app.dbPool, [dan, dan, eve, eve].map(u => ({ ownerId: u.id, operation: 'drive_clone' })))
  const ids = async (u: TestUser) => (await app.dbPool.query<{ id: string }>('SELECT id FROM jobs WHERE owner_id = $1 ORDER BY id', [u.id])).rows.map(r => r.id)
  const [d1, d2] = await ids(dan)
  const [e1, e2] = await ids(eve)
  const one = new pg.Client({ connectionString: databaseUrl })
  const two = new pg.Client({ connectionString: databaseUrl })
  await one.connect()
  await two.connect()
  t.teardown(async () => { await one.end(); await two.end() })
  // a wait on the other's row lock would end in this timeout (or a deadlock error), not a commit
  for (const c of [one, two]) await c.query("SET statement_timeout = '3s'; BEGIN")
  const finish = (c: pg.Client, id: string) => c.query("UPDATE jobs SET state = 'success', finished_at = now(), last_modified = now() WHERE id = $1", [id])
  // the same ten minutes and state for all four: the rows a shared counter would lock in turn
  await finish(one, d1)
  await finish(two, e1)
  await finish(one, e2)
  await finish(two, d2)
  await one.query('COMMIT')
  await two.query('COMMIT')
  t.pass('both committed')
  await agree(t, 'after both')
})

t.test('an account deep enough for every filter that seeks: pages of states and operations together', async t => {
  const frank = await createUser(app)
  await seed(frank.id, 2 * SEEK_FROM + 8_000, 17)
  await agree(t, 'frank seeded')
  // the combined filters hold more than SEEK_FROM matches here, so their deep pages seek
  const combined = FILTERS.filter(([states, operations]) => states !== undefined && operations !== undefined)
  for (const [orderBy, order] of ORDERS) await filteredPagesAgree(t, frank, 'frank', orderBy, order, combined)
  // and after some of his jobs finish, fail, start and go, and others arrive
  await app.dbPool.query(`UPDATE jobs SET state = 'success', finished_at = now(), last_modified = now()
    WHERE id IN (SELECT id FROM jobs WHERE owner_id = $1 AND parent_id IS NULL AND state = 'queued' ORDER BY id LIMIT 700)`, [frank.id])
  await app.dbPool.query(`UPDATE jobs SET state = 'error', finished_at = now(), last_modified = now() - interval '2 hours'
    WHERE id IN (SELECT id FROM jobs WHERE owner_id = $1 AND parent_id IS NULL AND state = 'started' ORDER BY id LIMIT 300)`, [frank.id])
  await app.dbPool.query('DELETE FROM jobs WHERE root_id IN (SELECT id FROM jobs WHERE owner_id = $1 AND parent_id IS NULL ORDER BY last_modified DESC LIMIT 400)', [frank.id])
  await seed(frank.id, 300, 19)
  await agree(t, 'frank after the changes')
  for (const [orderBy, order] of ORDERS) await filteredPagesAgree(t, frank, 'frank after the changes', orderBy, order, combined)
})

t.test('the purge deletes the buckets it emptied, and the pages stay right', async t => {
  const carol = await createUser(app)
  await seed(carol.id, TOP + 10_000, 13)
  // a third of carol's finished jobs finished four days ago (their last_modified too)
  await app.dbPool.query(`UPDATE jobs SET finished_at = now() - interval '4 days', last_modified = last_modified - interval '4 days'
    WHERE owner_id = $1 AND parent_id IS NULL AND state IN ('success', 'error', 'cancelled') AND abs(hashtext(id::text)) % 3 = 0`, [carol.id])
  await agree(t, 'the old ones moved four days back')
  const rows = async (table: string, where = 'true') => Number((await app.dbPool.query<{ n: string }>(`SELECT count(*) AS n FROM ${table} WHERE owner_id = $1 AND ${where}`, [carol.id])).rows[0].n)
  const old = "bucket < now() - interval '3 days'"
  t.ok(await rows('job_top_finished_tx', old) > 0, `${await rows('job_top_finished_tx', old)} rows of the transactions' counts of buckets older than the retention`)
  t.ok(await rows('job_top_created', old) === 0, 'none created that long ago')
  const result = await purgeOnce({ databaseUrl, prisma: app.prisma, log: app.log, retentionDays: 3 })
  t.ok(result.jobs > 5_000, `${result.jobs} trees purged`)
  t.equal(await rows('job_top_finished_tx'), 0, 'the transactions\' counts are folded')
  t.ok(await rows('job_top_finished') > 0, `into ${await rows('job_top_finished')} rows`)
  t.equal(await rows('job_top_finished', old), 0, 'none left for the buckets the purge emptied')
  t.equal(await rows('job_top_finished', 'n = 0'), 0, 'nor any that comes to 0')
  // by created: folded as well, the purged jobs counted down, and a bucket come to 0 dropped
  t.equal(await rows('job_top_created_finished_tx'), 0, 'the transactions\' counts by created are folded too')
  t.ok(await rows('job_top_created_finished') > 0, `into ${await rows('job_top_created_finished')} rows`)
  t.equal(await rows('job_top_created_finished', 'n = 0'), 0, 'none that comes to 0')
  await agree(t, 'after the purge')
  await pagesAgree(t, carol, 'after the purge', await edges(t, carol))
})

t.test('the migration counts the jobs already there', async t => {
  const sums = async () => [
    (await app.dbPool.query('SELECT owner_id, bucket, state, operation, sum(n) AS n FROM (SELECT owner_id, bucket, state, operation, n FROM job_top_finished UNION ALL SELECT owner_id, bucket, state, operation, n FROM job_top_finished_tx) f GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0 ORDER BY 1, 2, 3, 4')).rows,
    (await app.dbPool.query('SELECT owner_id, bucket, operation, sum(n) AS n FROM job_top_created GROUP BY 1, 2, 3 HAVING sum(n) <> 0 ORDER BY 1, 2, 3')).rows,
    (await app.dbPool.query('SELECT owner_id, bucket, state, operation, sum(n) AS n FROM (SELECT owner_id, bucket, state, operation, n FROM job_top_created_finished UNION ALL SELECT owner_id, bucket, state, operation, n FROM job_top_created_finished_tx) f GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0 ORDER BY 1, 2, 3, 4')).rows
  ]
  const before = await sums()
  // the database as it was before the four migrations
  await app.dbPool.query(`DROP TABLE job_top_finished, job_top_finished_tx, job_top_created, job_top_created_finished, job_top_created_finished_tx;
    DROP FUNCTION job_top_finished_counted, job_top_finished_moved, job_top_created_moved, job_list_buckets_written, job_list_buckets_truncated CASCADE;
    DROP INDEX jobs_top_open_idx;
    DROP FUNCTION job_list_bucket, job_list_bucket_end;
    DELETE FROM _prisma_migrations WHERE migration_name LIKE '%_job_list_buckets' OR migration_name LIKE '%_job_list_operations' OR migration_name LIKE '%_job_list_created_operations'
      OR migration_name LIKE '%_job_list_created_finished'`)
  t.same(await runMigrations(databaseUrl), ['20261206100000_job_list_buckets', '20261206130000_job_list_operations', '20261206170000_job_list_created_operations',
    '20261206190000_job_list_created_finished'], 'applied again')
  const after = await sums()
  t.same(after, before, `the same ${after[0].length}, ${after[1].length} and ${after[2].length} buckets counted`)
  await agree(t, 'after the migration')
  await pagesAgree(t, alice, 'after the migration', [SEEK_FROM + 1])
  // TRUNCATE (an operator's reset) empties them
  await app.dbPool.query('TRUNCATE jobs CASCADE')
  t.equal((await app.dbPool.query(`SELECT (SELECT count(*) FROM job_top_finished) + (SELECT count(*) FROM job_top_finished_tx) + (SELECT count(*) FROM job_top_created) +
    (SELECT count(*) FROM job_top_created_finished) + (SELECT count(*) FROM job_top_created_finished_tx) AS n`)).rows[0].n, '0', 'no counter row after TRUNCATE')
})
