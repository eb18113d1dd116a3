// The jobs list's bucket counters (prisma/migrations/20261206100000_job_list_buckets,
// 20261206130000_job_list_operations, 20261206170000_job_list_created_operations,
// 20261206190000_job_list_created_finished) against a count of the jobs: the finished top-level
// jobs by account, ten minutes of last_modified, state and operation (job_top_finished and the rows
// not yet folded, job_top_finished_tx), the same by ten minutes of created
// (job_top_created_finished and its _tx), and every top-level job by account, ten minutes of
// created and operation (job_top_created). Buckets that come to 0 are left out.
import type pg from 'pg'
import type { Test } from 'tap'

type Sums = Record<string, number>

const sums = async (pool: pg.Pool, sql: string): Promise<Sums> =>
  Object.fromEntries((await pool.query<{ k: string, n: string }>(sql)).rows.map(r => [r.k, Number(r.n)]))

/** a folded counter table and its transactions' rows, summed per account, bucket, state and operation */
const folded = (pool: pg.Pool, table: string) => sums(pool, `SELECT owner_id || ' ' || bucket || ' ' || state || ' ' || operation AS k, sum(n) AS n FROM (
    SELECT owner_id, bucket, state, operation, n FROM ${table} UNION ALL SELECT owner_id, bucket, state, operation, n FROM ${table}_tx) f
    GROUP BY owner_id, bucket, state, operation HAVING sum(n) <> 0`)

/** the finished top-level jobs counted per account, bucket of `column`, state and operation */
const finishedBy = (pool: pg.Pool, column: string) => sums(pool, `SELECT owner_id || ' ' || job_list_bucket(${column}) || ' ' || state || ' ' || operation AS k, count(*) AS n FROM jobs
    WHERE parent_id IS NULL AND state IN ('success', 'error', 'cancelled') GROUP BY owner_id, job_list_bucket(${column}), state, operation`)

/** Asserts every kind of counter equals the count; returns how many finished-job buckets (of last_modified) there are. */
export async function listCountersAgree (t: Test, pool: pg.Pool, what: string): Promise<number> {
  const finishedJobs = await finishedBy(pool, 'last_modified')
  t.same(await folded(pool, 'job_top_finished'), finishedJobs, `${what}: the finished jobs' counters equal their count (${Object.keys(finishedJobs).length} buckets)`)
  const createdFinished = await finishedBy(pool, 'created')
  t.same(await folded(pool, 'job_top_created_finished'), createdFinished, `${what}: so do those by created (${Object.keys(createdFinished).length} buckets)`)
  t.same(await sums(pool, 'SELECT owner_id || \' \' || bucket || \' \' || operation AS k, sum(n) AS n FROM job_top_created GROUP BY owner_id, bucket, operation HAVING sum(n) <> 0'),
    await sums(pool, 'SELECT owner_id || \' \' || job_list_bucket(created) || \' \' || operation AS k, count(*) AS n FROM jobs WHERE parent_id IS NULL GROUP BY owner_id, job_list_bucket(created), operation'),
    `${what}: and those of every job by created and operation`)
  return Object.keys(finishedJobs).length
}
