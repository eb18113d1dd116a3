// Creating jobs: inside the caller's transaction, so a job row exists exactly when the domain
// change that needs it was committed, or (jobs that go with no domain change) on their own, one
// atomic statement per batch.
import { randomFillSync } from 'node:crypto'
import { v7 as uuidv7 } from 'uuid'
import { uri } from '../domain/uris.ts'
import { publishEventsSql } from './events.ts'
import { CHANNELS } from './listener.ts'
import { query, type Sql } from '../db/sql.ts'
import type { Operation } from './types.ts'

export interface JobResourceInput {
  type: 'drives' | 'servers'
  id: string
  /** read: the job only reads it (a clone source); write: the job changes it */
  mode?: 'read' | 'write'
}

export interface EnqueueInput {
  id?: string
  ownerId: string
  /**
   * Makes this job a child of `parentId` (enqueue the parent first, in the same transaction).
   * The parent is claimed only once all its children have finished.
   */
  operation: Operation
  params?: Record<string, unknown>
  resources?: JobResourceInput[]
  parentId?: string
  /** Looked up from the parent when omitted. */
  rootId?: string
  bytesTotal?: number
  description?: string
  runAt?: Date
  maxAttempts?: number
}

export const JOBS_CHANNEL = CHANNELS.jobs

/**
 * A new job id: a UUID (RFC 9562 version 7) whose first bits are the time, so new rows land at
 * the right edge of the jobs indexes that lead with the id (primary key, root) instead of on a
 * random page each. Its 74 random bits keep it unguessable enough for
 * an id (it is not a credential: every read is checked against the account).
 */
export function newJobId (): string {
  // random bits from a pooled buffer: one getRandomValues call per id costs more than the rest of it
  if (randomAt + 16 > randomPool.length) { randomFillSync(randomPool); randomAt = 0 }
  const id = uuidv7({ random: randomPool.subarray(randomAt, randomAt + 16) })
  randomAt += 16
  return id
}
const randomPool = Buffer.alloc(16 * 256)
let randomAt = randomPool.length

export async function enqueueJob (tx: Sql, input: EnqueueInput): Promise<{ id: string }> {
  const [job] = await enqueueJobs(tx, [input])
  return job
}

/**
 * Enqueues many jobs in one statement whatever their count: the jobs, their resources, their change
 * events (each job once, each root once) with their NOTIFYs, and one wake-up NOTIFY. `db` is the
 * caller's transaction (Prisma's, or a pg client inside BEGIN), or a client or pool on its own: the
 * statement is atomic by itself, one round trip. On pg it is a named (prepared) statement and
 * skips Prisma's query path (in bench:jobs, about half the client's CPU per 1,000 jobs).
 * The rows travel as JSON, one parameter each, so a batch costs the database a few rows per job
 * and the client almost nothing. Parents come before their children in `inputs` (or already
 * exist: the statement reads their root). A job's `created` is when its row is written, not when
 * the caller's transaction began (a request that does more work before enqueueing would otherwise
 * show that work as time spent in the queue).
 */
export async function enqueueJobs (db: Sql, inputs: EnqueueInput[]): Promise<Array<{ id: string }>> {
  if (inputs.length === 0) return []
  const ids = inputs.map(i => i.id ?? newJobId())
  // a job's root: given, its own id (top level), its in-batch parent's root, or (parent outside
  // the batch) read by the statement from the top of its in-batch chain's parent (`rf`)
  const roots = new Map<string, { root?: string, from?: string }>()
  const rootOf = inputs.map((input, k) => {
    let r: { root?: string, from?: string }
    if (input.rootId) r = { root: input.rootId }
    else if (input.parentId) r = roots.get(input.parentId) ?? { from: input.parentId }
    else r = { root: ids[k] }
    roots.set(ids[k], r)
    return r
  })
  // the rows travel as sparse JSON: what most jobs of a batch share (owner, operation, run_at) is
  // sent once, and a field at its default is left out; the change events are derived from the rows
  // in SQL (the bench's batch of 500 parked jobs is ~31 KB; ~47 KB with run_at in every row)
  const owner = inputs[0].ownerId
  const operation = inputs[0].operation
  const runAt = inputs[0].runAt?.toISOString() ?? null
  const jobs = inputs.map((i, k) => {
    const row: Record<string, unknown> = { id: ids[k] }
    if (i.ownerId !== owner) row.o = i.ownerId
    if (i.operation !== operation) row.op = i.operation
    if (i.params !== undefined && Object.keys(i.params).length > 0) row.p = i.params
    if (i.parentId) row.par = i.parentId
    const r = rootOf[k]
    if (r.from) row.rf = r.from
    else if (r.root !== ids[k]) row.root = r.root
    if (i.resources !== undefined && i.resources.length > 0) row.res = i.resources.map(x => uri(x.type, x.id))
    if (i.bytesTotal !== undefined) row.bt = Math.floor(i.bytesTotal)
    if (i.description !== undefined) row.d = i.description
    const ra = i.runAt?.toISOString() ?? null
    // 'now' is PostgreSQL's input for the statement's transaction time, as now()
    if (ra !== runAt) row.ra = ra ?? 'now'
    if (i.maxAttempts !== undefined) row.ma = i.maxAttempts
    return row
  })
  const links = inputs.flatMap((i, k) => (i.resources ?? []).map(r => ({ job: ids[k], t: r.type, id: r.id, m: r.mode ?? 'write' })))
  await query(db, ENQUEUE_SQL, [JSON.stringify(jobs), links.length > 0 ? JSON.stringify(links) : '[]', JOBS_CHANNEL, ids[0], owner, operation, runAt], 'clonejobs_enqueue')
  return ids.map(id => ({ id }))
}

// Constant text (the NOTIFY SELECT is a constant fragment); every value is bound as $n. A root read
// from a parent outside the batch is NULL when that parent does not exist: root_id is NOT NULL, so
// the statement fails and nothing of the batch is written.
const ENQUEUE_SQL = `
  WITH x AS MATERIALIZED (
    SELECT r.id, COALESCE(r.o, $5::uuid) AS o, COALESCE(r.op, $6::text) AS op, COALESCE(r.p, '{}') AS p, r.par,
      CASE WHEN r.rf IS NULL THEN COALESCE(r.root, r.id) ELSE (SELECT p.root_id FROM jobs p WHERE p.id = r.rf) END AS root,
      COALESCE(r.res, '{}') AS res, r.bt, r.d, COALESCE(r.ra, $7::timestamptz, now()) AS ra,
      COALESCE(r.ma, 3) AS ma, r.n
    FROM ROWS FROM (json_to_recordset($1::json) AS (id uuid, o uuid, op text, p jsonb, par uuid, root uuid, rf uuid, res text[], bt bigint, d text, ra timestamptz, ma int))
      WITH ORDINALITY AS r(id, o, op, p, par, root, rf, res, bt, d, ra, ma, n)
  ),
  j AS (
    INSERT INTO jobs (id, owner_id, operation, state, params, parent_id, root_id, resources, bytes_total, description, run_at, max_attempts, created, last_modified)
    SELECT x.id, x.o, x.op, 'queued', x.p, x.par, x.root, x.res, x.bt, x.d, x.ra, x.ma, clock_timestamp(), clock_timestamp()
    FROM x ORDER BY x.n
    RETURNING id
  ),
  l AS (
    INSERT INTO job_resources (job_id, resource_type, resource_id, mode)
    SELECT l.job, l.t, l.id, l.m FROM json_to_recordset($2::json) AS l(job uuid, t text, id uuid, m text)
    RETURNING job_id
  ),
  -- change events: each new job once ('added'), and the root of a job whose root existed before
  -- once ('changed': its roll-up moved), in the order of the rows
  c AS (
    SELECT x.n, 0 AS k, x.o, x.id AS r, 'added' AS c FROM x
    UNION ALL
    SELECT * FROM (
      SELECT DISTINCT ON (x.root) x.n, 1, x.o, x.root, 'changed' FROM x
      WHERE x.root <> x.id AND x.root NOT IN (SELECT id FROM x)
      ORDER BY x.root, x.n
    ) outside
  ),
  ${publishEventsSql(`
    SELECT c.o AS owner_id, 'jobs' AS resource_type, c.r::text AS resource_id, c.c AS change
    FROM c ORDER BY c.n, c.k`)}
  SELECT (SELECT count(*) FROM j)::int AS jobs, (SELECT count(*) FROM l)::int AS links,
    (SELECT n FROM notified) AS notified,
    -- delivered when the transaction commits: wakes idle workers in every process
    pg_notify($3, $4)::text AS woken`
