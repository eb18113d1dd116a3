// The few queue statements, in raw SQL: claim, heartbeat, finish, release, cancel, purge.
// Everything else about jobs goes through Prisma. Statements run through Prisma are tagged
// templates ($queryRaw / $executeRaw): every value is a bound parameter. The hot ones (claim,
// heartbeat, renew, finish) are constant texts with $n placeholders, bound by the pg pool or Prisma
// (query() in src/db/sql.ts; on the engine's pool, named statements planned generically, see engine.ts).
import { Prisma, type PrismaClient, type Tx } from '../db/client.ts'
import { query, type Sql } from '../db/sql.ts'
import { publishEventsSql } from './events.ts'
import { CHANNELS } from './listener.ts'
import { LOG_EXCERPT_LINES, LOG_MAX_LINES } from './log-limits.ts'

type Db = PrismaClient | Tx

/**
 * The unfinished states, as a literal list: the partial indexes (jobs_due_idx, jobs_cancel_idx,
 * jobs_lease_idx) are defined on it, so the planner can use them only when it is spelt out.
 */
export const UNFINISHED_SQL = Prisma.sql`('queued', 'started', 'cancelling')`
/** The same list as text, for the constant hot statements. */
export const UNFINISHED = UNFINISHED_SQL.text

/**
 * CTEs that publish change events (events rows + NOTIFY, like publishChange) for the jobs of the
 * CTE `src` (columns id, owner_id, root_id) and their roots, in the same statement.
 */
function publishCtes (src: string): string {
  return `
    ${publishEventsSql(`
      SELECT DISTINCT ON (u.rid) s.owner_id, 'jobs' AS resource_type, u.rid AS resource_id, 'changed' AS change
      FROM ${src} s CROSS JOIN LATERAL unnest(ARRAY[s.id::text, s.root_id::text]) AS u(rid)`)}`
}

export interface ClaimedRow {
  id: string
  owner_id: string
  operation: string
  parent_id: string | null
  root_id: string
  params: Record<string, unknown>
  checkpoint: unknown
  attempts: number
  max_attempts: number
  cancel_requested: boolean
  /** true when the job was taken over from a process whose lease expired */
  taken_over: boolean
  /** the job's state before this claim, and whether it had started before (see unclaimJobs) */
  prior_state: string
  was_started: boolean
  /** true when the job has children (it is claimed once they have all finished) */
  has_children: boolean
  /** milliseconds between the job becoming due and this claim */
  claim_latency_ms: number
}

/**
 * Claims up to `limit` runnable jobs:
 * - unlocked queued/started/cancelling jobs that are due (or cancelled) and have no unfinished
 *   child: plain jobs, parents whose children are all done, jobs given back on shutdown;
 * - started/cancelling jobs whose lease expired (their process died): a takeover.
 * Each kind is found through its own partial index (jobs_due_idx in the claim's order for the
 * default priority, jobs_due_priority_idx for the others, jobs_cancel_idx, jobs_lease_idx), so a
 * claim reads about as many rows as it takes, and parked jobs (run_at far out) and held ones
 * (leased) are never scanned.
 * SKIP LOCKED lets many processes claim at once without ever handing one job to two of them.
 * $4 lists the jobs this worker still runs (a stale attempt winding down): never claimed again here.
 * Each claim increments `attempts`: (id, attempts) is the fencing token of every later write.
 */
/** What each claim branch reads of a candidate: the claim's order, and its state before the claim. */
const CLAIM_COLUMNS = 'j.id, j.cancel_requested, j.priority, j.run_at, j.created, j.state, j.started_at'

export const CLAIM_SQL = `
    WITH due AS (
      SELECT ${CLAIM_COLUMNS}, false AS taken_over FROM jobs j
      WHERE j.state IN ${UNFINISHED} AND j.locked_by IS NULL AND j.priority = 0 AND j.run_at <= now()
        AND NOT (j.id = ANY($4::uuid[]))
        AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = j.id AND c.state IN ${UNFINISHED})
      ORDER BY j.run_at, j.created
      LIMIT $3
      FOR UPDATE OF j SKIP LOCKED
    ),
    due_priority AS (
      SELECT ${CLAIM_COLUMNS}, false AS taken_over FROM jobs j
      WHERE j.state IN ${UNFINISHED} AND j.locked_by IS NULL AND j.priority <> 0 AND j.run_at <= now()
        AND NOT (j.id = ANY($4::uuid[]))
        AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = j.id AND c.state IN ${UNFINISHED})
      ORDER BY j.priority DESC, j.run_at, j.created
      LIMIT $3
      FOR UPDATE OF j SKIP LOCKED
    ),
    cancelled AS (
      SELECT ${CLAIM_COLUMNS}, false AS taken_over FROM jobs j
      WHERE j.state IN ${UNFINISHED} AND j.locked_by IS NULL AND j.cancel_requested
        AND NOT (j.id = ANY($4::uuid[]))
        AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = j.id AND c.state IN ${UNFINISHED})
      LIMIT $3
      FOR UPDATE OF j SKIP LOCKED
    ),
    expired AS (
      SELECT ${CLAIM_COLUMNS}, true AS taken_over FROM jobs j
      WHERE j.state IN ${UNFINISHED} AND j.locked_by IS NOT NULL AND j.locked_until < now()
        AND NOT (j.id = ANY($4::uuid[]))
      ORDER BY j.locked_until
      LIMIT $3
      FOR UPDATE OF j SKIP LOCKED
    ),
    -- the candidates carry what the order needs, so nothing joins the jobs table again (a join
    -- the planner may turn into a scan of the whole table once it has statistics); a job found by
    -- two branches (cancelled and due) is one row after UNION
    ready AS (
      SELECT * FROM (SELECT * FROM cancelled UNION SELECT * FROM expired UNION SELECT * FROM due UNION SELECT * FROM due_priority) u
      ORDER BY u.cancel_requested DESC, u.priority DESC, u.run_at, u.created
      LIMIT $3
    ),
    claimed AS (
      UPDATE jobs j SET
        state = CASE WHEN j.state = 'queued' THEN 'started' ELSE j.state END,
        locked_by = $1,
        locked_until = now() + make_interval(secs => $2),
        attempts = j.attempts + 1,
        started_at = COALESCE(j.started_at, now()),
        last_modified = now()
      -- by primary key, whatever the planner thinks of the candidates' count
      WHERE j.id = ANY (ARRAY(SELECT id FROM ready))
      RETURNING j.id, j.owner_id, j.operation, j.parent_id, j.root_id, j.params, j.checkpoint, j.attempts,
                j.max_attempts, j.cancel_requested, j.run_at, j.created
    ),
    ${publishCtes('claimed')}
    SELECT c.id::text, c.owner_id::text, c.operation, c.parent_id::text, c.root_id::text, c.params,
           c.checkpoint, c.attempts, c.max_attempts, c.cancel_requested, r.taken_over,
           r.state AS prior_state, r.started_at IS NOT NULL AS was_started,
           EXISTS (SELECT 1 FROM jobs k WHERE k.parent_id = c.id) AS has_children,
           (extract(epoch FROM now() - GREATEST(c.run_at, c.created)) * 1000)::float8 AS claim_latency_ms,
           (SELECT n FROM notified)::int AS published
    FROM claimed c JOIN ready r ON r.id = c.id`

export async function claimJobs (db: Sql, workerId: string, leaseSeconds: number, limit: number, exclude: string[] = []): Promise<ClaimedRow[]> {
  return query<ClaimedRow>(db, CLAIM_SQL, [workerId, leaseSeconds, limit, exclude], 'clonejobs_claim')
}

export interface JobKey { id: string, owner_id: string, root_id: string }

/** A job leased by takeJob, with its attempt (the fencing token). */
export type TakenJob = JobKey & { attempts: number }

/** Locks the parent row first: every settle of one family queues on it, so siblings never deadlock. */
export async function lockJob (db: Db, id: string): Promise<void> {
  await db.$queryRaw`SELECT id FROM jobs WHERE id = ${id}::uuid FOR UPDATE`
}

/**
 * Locks the row of one attempt for the rest of the caller's transaction, if that attempt still
 * holds a lease valid for `marginSeconds` more: while it is locked no other process can claim the
 * job (claims skip locked rows), so the transaction's writes are fenced. False when stale.
 */
export async function lockAttempt (db: Db, workerId: string, key: LeaseKey, marginSeconds: number): Promise<boolean> {
  const rows = await db.$queryRawUnsafe<unknown[]>(`WITH ${fenceCte(1)} SELECT held FROM fence`,
    ...fenceParams({ jobId: key.id, worker: workerId, attempt: key.attempt, marginSeconds }))
  return rows.length > 0
}

/** The fencing token of one attempt of a claimed job, for a statement fenced by it (fenceCte). */
export interface AttemptFence {
  jobId: string
  /** the lease owner (the engine's worker id) */
  worker: string
  attempt: number
  /** how long the lease must still hold (the engine's margin), as lockAttempt asks */
  marginSeconds: number
}

/**
 * The CTE `fence` of a single statement fenced by an attempt, its parameters at $first..$first+3
 * (fenceParams): it locks the attempt's job row for the rest of the transaction, so a claim skips
 * the job until the statement commits, and it is empty when the attempt is stale. Under READ
 * COMMITTED a row being taken over meanwhile is read again once the takeover commits, so the fence
 * fails then. Writes of the statement test it (`AND EXISTS (SELECT 1 FROM fence)`), and the statement
 * returns `(SELECT count(*)::int FROM fence) AS fenced`, so that its caller tells a stale attempt
 * (ctx.fencedStatement: LeaseLost) from a resource this job no longer holds. lockAttempt is it alone.
 */
export function fenceCte (first: number): string {
  return `fence AS (
    SELECT 1 AS held FROM jobs
    WHERE id = $${first}::uuid AND locked_by = $${first + 1}::text AND attempts = $${first + 2}::int AND state IN ${UNFINISHED}
      AND locked_until > now() + make_interval(secs => $${first + 3}::float8)
    FOR UPDATE)`
}

/** The values of fenceCte's parameters, in order. */
export function fenceParams (f: AttemptFence): [string, string, number, number] {
  return [f.jobId, f.worker, f.attempt, f.marginSeconds]
}

/** Marks the queued ancestors of just-claimed jobs started: a parent is started while children run. */
export async function startAncestors (db: Db, ids: string[]): Promise<JobKey[]> {
  if (ids.length === 0) return []
  return db.$queryRaw<JobKey[]>`
    WITH RECURSIVE anc AS (
      SELECT parent_id AS id FROM jobs WHERE id = ANY(${ids}::uuid[]) AND parent_id IS NOT NULL
      UNION
      SELECT j.parent_id FROM jobs j JOIN anc ON j.id = anc.id WHERE j.parent_id IS NOT NULL
    )
    UPDATE jobs SET state = 'started', started_at = COALESCE(started_at, now()), last_modified = now()
    WHERE id IN (SELECT id FROM anc) AND state = 'queued'
    RETURNING id::text, owner_id::text, root_id::text`
}

/** A lease: the job and the attempt that holds it (the fencing token). */
export interface LeaseKey { id: string, attempt: number }

export interface BeatRow { id: string, cancel_requested: boolean, renewed: boolean }

/**
 * Renews the leases this worker holds, for the attempts it runs. Returns the jobs still held (a
 * missing one was lost) and whether each was renewed: a row another transaction has locked (a
 * settle, a guarded write) is skipped rather than waited for, so heartbeats take no part in lock
 * cycles; it is renewed on the next beat.
 */
export async function heartbeat (db: Sql, workerId: string, keys: LeaseKey[], leaseSeconds: number): Promise<BeatRow[]> {
  if (keys.length === 0) return []
  return query<BeatRow>(db, `
    WITH k AS (SELECT * FROM unnest($2::uuid[], $3::int[]) AS k(id, attempt)),
    mine AS (
      SELECT j.id, j.cancel_requested FROM jobs j JOIN k ON j.id = k.id AND j.attempts = k.attempt
      WHERE j.locked_by = $1 AND j.state IN ${UNFINISHED}
    ),
    lockable AS (
      SELECT j.id FROM jobs j WHERE j.id IN (SELECT id FROM mine) ORDER BY j.id FOR UPDATE SKIP LOCKED
    ),
    renewed AS (
      UPDATE jobs j SET locked_until = now() + make_interval(secs => $4)
      FROM lockable l JOIN k ON k.id = l.id
      WHERE j.id = l.id AND j.locked_by = $1 AND j.attempts = k.attempt
      RETURNING j.id
    )
    SELECT m.id::text, m.cancel_requested, r.id IS NOT NULL AS renewed FROM mine m LEFT JOIN renewed r ON r.id = m.id`,
  [workerId, keys.map(k => k.id), keys.map(k => k.attempt), leaseSeconds], 'clonejobs_heartbeat')
}

/**
 * Renews one lease, waiting for its row lock (a progress write, a guarded transaction): a statement
 * holding a single row lock cannot close a lock cycle. For the rows heartbeat() skipped.
 */
export async function renewLease (db: Sql, workerId: string, key: LeaseKey, leaseSeconds: number): Promise<boolean> {
  const rows = await query<{ id: string }>(db, `
    UPDATE jobs SET locked_until = now() + make_interval(secs => $4)
    WHERE id = $2::uuid AND locked_by = $1 AND attempts = $3 AND state IN ${UNFINISHED}
    RETURNING id::text`, [workerId, key.id, key.attempt, leaseSeconds])
  return rows.length > 0
}

/**
 * Extends the lease of one attempt, only while it is still valid for `marginSeconds` more:
 * the guard a handler passes before an irreversible step. False when the attempt is stale.
 */
export async function fenceLease (db: Db, workerId: string, key: LeaseKey, leaseSeconds: number, marginSeconds: number): Promise<boolean> {
  const rows = await db.$queryRaw<unknown[]>`
    UPDATE jobs SET locked_until = now() + make_interval(secs => ${leaseSeconds})
    WHERE id = ${key.id}::uuid AND locked_by = ${workerId} AND attempts = ${key.attempt} AND state IN ${UNFINISHED_SQL}
      AND locked_until > now() + make_interval(secs => ${marginSeconds})
    RETURNING id`
  return rows.length > 0
}

/**
 * Saves a handler's checkpoint (what a takeover resumes from), fenced by its attempt: false when
 * the attempt is stale. Used by claimed jobs (ctx.checkpoint) and request-held ones alike.
 */
export async function saveCheckpoint (db: Db, workerId: string, key: LeaseKey, data: unknown): Promise<boolean> {
  const r = await db.job.updateMany({
    where: { id: key.id, lockedBy: workerId, attempts: key.attempt },
    data: { checkpoint: data as object }
  })
  return r.count > 0
}

export interface FinishFields {
  state: 'success' | 'error' | 'cancelled'
  result?: unknown
  error?: { error_type: string, error_message: string } | null
  /** what was done, replacing the last in-progress description (e.g. "copied 10 GiB in 4.2 s") */
  description?: string
}

/** A line of a job's log, still to be written (src/engine/log.ts). */
export interface PendingLine { at: Date, line: string }

export type FinishedRow = JobKey & { parent_id: string | null, duration_s: number }

/**
 * Records the end of jobs this worker holds, publishes them and wakes the workers of their parents,
 * in one statement for the whole batch. Each row is fenced by its own attempt: a job whose lease
 * was lost meanwhile is left alone and missing from the answer. Rows are locked in id order, so
 * two batches (or a batch and a cancel) cannot lock each other's rows in opposite orders.
 * The jobs' last log lines ($8-$10: job id, time, text per line) are written by the same statement,
 * fenced with the finish (src/engine/log.ts keeps the same bounds: LOG_MAX_LINES per job, the last
 * LOG_EXCERPT_LINES in log_tail); a log follower is woken by the job's change event.
 */
export const FINISH_SQL = `
    WITH k AS (
      SELECT * FROM unnest($2::uuid[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[]) AS k(id, attempt, state, result, error, description)
    ),
    lines AS (
      SELECT * FROM unnest($8::uuid[], $9::timestamptz[], $10::text[]) WITH ORDINALITY AS l(job_id, at, line, n)
    ),
    tails AS (
      SELECT job_id, array_agg(line ORDER BY n) AS lines, count(*)::int AS c FROM lines GROUP BY job_id
    ),
    mine AS (
      SELECT j.id FROM jobs j JOIN k ON j.id = k.id
      WHERE j.locked_by = $1 AND j.attempts = k.attempt
      ORDER BY j.id
      FOR UPDATE OF j
    ),
    f AS (
      UPDATE jobs j SET state = k.state, result = k.result::jsonb, error = k.error::jsonb,
        progress = CASE WHEN k.state = 'success' THEN 100 ELSE j.progress END,
        bytes_done = CASE WHEN k.state = 'success' AND j.bytes_total IS NOT NULL THEN j.bytes_total ELSE j.bytes_done END,
        description = COALESCE(k.description, j.description),
        log_tail = CASE WHEN t.lines IS NULL THEN j.log_tail
          ELSE (COALESCE(j.log_tail, '{}') || t.lines)[GREATEST(1, cardinality(COALESCE(j.log_tail, '{}') || t.lines) - ${LOG_EXCERPT_LINES - 1}):] END,
        eta_seconds = NULL, locked_by = NULL, locked_until = NULL,
        finished_at = now(), last_modified = now()
      FROM mine m JOIN k ON k.id = m.id LEFT JOIN tails t ON t.job_id = m.id
      WHERE j.id = m.id AND j.locked_by = $1 AND j.attempts = k.attempt
      RETURNING j.id, j.owner_id, j.root_id, j.parent_id, j.attempts, (extract(epoch FROM now() - COALESCE(j.started_at, j.created)))::float8 AS duration_s
    ),
    logged AS (
      INSERT INTO job_log (job_id, attempt, at, line)
      SELECT l.job_id, f.attempts, l.at, l.line FROM lines l JOIN f ON f.id = l.job_id
      ORDER BY l.n
      RETURNING 1
    ),
    -- the statement sees each log as it was before these lines: keep LOG_MAX_LINES minus them
    trimmed AS (
      DELETE FROM job_log d USING (
        SELECT t.job_id, (SELECT o.id FROM job_log o WHERE o.job_id = t.job_id ORDER BY o.id DESC OFFSET GREATEST(0, ${LOG_MAX_LINES} - t.c) LIMIT 1) AS cut
        FROM tails t WHERE t.job_id IN (SELECT id FROM f)
      ) x
      WHERE d.job_id = x.job_id AND d.id <= x.cut
      RETURNING 1
    ),
    ${publishCtes('f')},
    woken AS (
      SELECT count(*) AS n FROM (SELECT pg_notify('${CHANNELS.jobs}', p::text) FROM (SELECT DISTINCT parent_id AS p FROM f WHERE parent_id IS NOT NULL) x) y
    )
    SELECT f.id::text, f.owner_id::text, f.root_id::text, f.parent_id::text, f.duration_s,
           (SELECT n FROM notified)::int + (SELECT n FROM woken)::int AS published
    FROM f`

export interface Finish { key: LeaseKey, fields: FinishFields, lines?: PendingLine[] }

export async function finishJobs (db: Sql, workerId: string, batch: Finish[]): Promise<FinishedRow[]> {
  if (batch.length === 0) return []
  // the last LOG_MAX_LINES lines of each job at most
  const lines = batch.flatMap(b => (b.lines ?? []).slice(-LOG_MAX_LINES).map(l => ({ id: b.key.id, at: l.at.toISOString(), line: l.line })))
  return query<FinishedRow>(db, FINISH_SQL, [
    workerId,
    batch.map(b => b.key.id),
    batch.map(b => b.key.attempt),
    batch.map(b => b.fields.state),
    batch.map(b => JSON.stringify(b.fields.result ?? null)),
    batch.map(b => b.fields.error ? JSON.stringify(b.fields.error) : null),
    batch.map(b => b.fields.description ?? null),
    lines.map(l => l.id),
    lines.map(l => l.at),
    lines.map(l => l.line)
  ], 'clonejobs_finish')
}

/** finishJobs for one job (inside a caller's transaction, e.g. with the domain change that goes with it). */
export async function finishJob (db: Sql, workerId: string, key: LeaseKey, f: FinishFields, lines?: PendingLine[]): Promise<FinishedRow | undefined> {
  return (await finishJobs(db, workerId, [{ key, fields: f, lines }]))[0]
}

/**
 * Puts a job this worker holds back in the queue, due in `delaySeconds` (a transient failure).
 * Its state goes back to `queued`, so it publishes one change event (as every visible change does),
 * in the same statement; the next claim publishes `started` again.
 */
export async function retryJob (db: Sql, workerId: string, key: LeaseKey, delaySeconds: number, checkpoint?: unknown): Promise<boolean> {
  // fenced like every other write of an attempt: a stale attempt cannot requeue a newer one
  const rows = await query<{ id: string }>(db, `
    WITH r AS (
      UPDATE jobs SET state = 'queued', locked_by = NULL, locked_until = NULL,
        run_at = now() + make_interval(secs => $3), last_modified = now(),
        checkpoint = COALESCE($5::jsonb, checkpoint)
      WHERE id = $2::uuid AND locked_by = $1 AND attempts = $4
      RETURNING id, owner_id, root_id
    ),
    ${publishCtes('r')}
    SELECT r.id::text, (SELECT n FROM notified)::int AS published FROM r`, [workerId, key.id, delaySeconds, key.attempt, checkpoint === undefined ? null : JSON.stringify(checkpoint)])
  return rows.length > 0
}

/**
 * Gives jobs back to the queue on graceful shutdown, so another process picks them up at once.
 * A started job becomes `queued` again: one change event each (a cancelling one keeps its state
 * and only loses its lease, which no client sees: no event).
 */
export async function releaseJobs (db: Sql, workerId: string, ids: string[]): Promise<void> {
  if (ids.length === 0) return
  await query(db, `
    WITH r AS (
      UPDATE jobs j SET state = CASE WHEN j.state = 'started' THEN 'queued' ELSE j.state END,
        locked_by = NULL, locked_until = NULL,
        last_modified = CASE WHEN j.state = 'started' THEN now() ELSE j.last_modified END
      FROM (SELECT id, state AS was FROM jobs WHERE id = ANY($2::uuid[]) AND locked_by = $1 ORDER BY id FOR UPDATE) o
      WHERE j.id = o.id
      RETURNING j.id, j.owner_id, j.root_id, o.was
    ),
    requeued AS (SELECT * FROM r WHERE was = 'started'),
    ${publishCtes('requeued')}
    SELECT (SELECT n FROM notified)::int AS published`, [workerId, ids])
}

/** A claimed job that never ran, as it was before its claim. */
export interface Unclaim { key: LeaseKey, priorState: string, wasStarted: boolean }

/**
 * Undoes the claims of jobs this worker claimed but never started (they waited for a free slot
 * too long, or the process is stopping): each goes back as it was before its claim, its attempt
 * given back too, so the next claim is the same attempt number and no takeover. Fenced by
 * (id, attempt) like every write of an attempt. A job cancelled meanwhile keeps `cancelling`.
 * A job whose state goes back (started → queued) publishes one change event, in the statement.
 */
export async function unclaimJobs (db: Sql, workerId: string, jobs: Unclaim[]): Promise<string[]> {
  if (jobs.length === 0) return []
  const rows = await query<{ id: string }>(db, `
    WITH u AS (SELECT * FROM unnest($2::uuid[], $3::int[], $4::text[], $5::bool[]) AS u(id, attempt, prior, was_started)),
    o AS (
      SELECT j.id, j.state AS was FROM jobs j JOIN u ON u.id = j.id AND j.attempts = u.attempt
      WHERE j.locked_by = $1 AND j.state IN ${UNFINISHED}
      ORDER BY j.id FOR UPDATE OF j
    ),
    r AS (
      UPDATE jobs j SET state = CASE WHEN j.state = 'started' THEN u.prior ELSE j.state END,
        started_at = CASE WHEN u.was_started THEN j.started_at END,
        attempts = j.attempts - 1, locked_by = NULL, locked_until = NULL,
        last_modified = CASE WHEN j.state = 'started' AND u.prior <> 'started' THEN now() ELSE j.last_modified END
      FROM o JOIN u ON u.id = o.id
      WHERE j.id = o.id
      RETURNING j.id, j.owner_id, j.root_id, o.was <> j.state AS moved
    ),
    moved AS (SELECT * FROM r WHERE moved),
    ${publishCtes('moved')}
    SELECT r.id::text, (SELECT n FROM notified)::int AS published FROM r`,
  [workerId, jobs.map(j => j.key.id), jobs.map(j => j.key.attempt), jobs.map(j => j.priorState), jobs.map(j => j.wasStarted)], 'clonejobs_unclaim')
  return rows.map(r => r.id)
}

export interface CancelledRow extends JobKey { locked_by: string | null }

/**
 * Requests cancellation of the unfinished jobs in the subtrees under `ids` (the jobs themselves
 * included unless `childrenOnly`). Running ones are aborted by their process; the others are
 * claimed for cleanup.
 */
export async function cancelSubtrees (db: Db, ids: string[], opts: { childrenOnly?: boolean, except?: string } = {}): Promise<CancelledRow[]> {
  if (ids.length === 0) return []
  const except = opts.except ?? null
  const start = opts.childrenOnly
    ? Prisma.sql`SELECT id FROM jobs WHERE parent_id = ANY(${ids}::uuid[]) AND id IS DISTINCT FROM ${except}::uuid`
    : Prisma.sql`SELECT id FROM jobs WHERE id = ANY(${ids}::uuid[]) AND id IS DISTINCT FROM ${except}::uuid`
  return db.$queryRaw<CancelledRow[]>`
    WITH RECURSIVE tree AS (
      ${start}
      UNION ALL
      SELECT j.id FROM jobs j JOIN tree t ON j.parent_id = t.id
    ),
    -- rows are locked in id order, like a batch of finishes, so the two never wait for each other
    -- in a cycle; jobs already being cancelled are left alone: two cancelled siblings settling at
    -- once would otherwise each wait for the other's row lock
    locked AS (
      SELECT id FROM jobs WHERE id IN (SELECT id FROM tree) AND state IN ${UNFINISHED_SQL} AND NOT cancel_requested
      ORDER BY id FOR UPDATE
    )
    UPDATE jobs SET cancel_requested = true, state = 'cancelling', last_modified = now()
    WHERE id IN (SELECT id FROM locked) AND state IN ${UNFINISHED_SQL} AND NOT cancel_requested
    RETURNING id::text, owner_id::text, root_id::text, locked_by`
}

/** The outcome of a parent's children: the first failure (error before cancelled), if any. */
export async function childOutcome (db: Db, parentId: string): Promise<{ state: 'error' | 'cancelled', error: { error_type: string, error_message: string } | null } | undefined> {
  const rows = await db.$queryRaw<Array<{ state: 'error' | 'cancelled', error: { error_type: string, error_message: string } | null }>>`
    SELECT state, error FROM jobs WHERE parent_id = ${parentId}::uuid AND state IN ('error', 'cancelled')
    ORDER BY state = 'error' DESC, finished_at LIMIT 1`
  return rows[0]
}

/** Deletes up to `limit` finished top-level jobs (and their trees) finished before `cutoff`. */
export async function purgeBatch (db: Db, cutoff: Date, limit: number): Promise<number> {
  const rows = await db.$queryRaw<Array<{ n: number }>>`
    WITH roots AS (
      SELECT id FROM jobs
      WHERE parent_id IS NULL AND state IN ('success', 'error', 'cancelled') AND finished_at < ${cutoff}
      ORDER BY finished_at LIMIT ${limit}
    ), gone AS (
      DELETE FROM jobs WHERE root_id IN (SELECT id FROM roots) RETURNING parent_id
    )
    SELECT count(*) FILTER (WHERE parent_id IS NULL)::int AS n FROM gone`
  return rows[0]?.n ?? 0
}

/** The transaction-scoped advisory lock of a fold of the list counters: one fold at a time, the purge's or the schedule's. */
export const FOLD_LOCK_KEY = 7_248_310_552

export interface FoldResult {
  /** transactions' rows folded */
  folded: number
  /** counter rows deleted: come to 0, or buckets whose jobs are all gone */
  emptied: number
}

/**
 * The finished-job counters that transactions write into rows of their own, each `<table>_tx`
 * folded into `<table>`: by last_modified (job_top_finished, see
 * prisma/migrations/20261206100000_job_list_buckets) and by created
 * (job_top_created_finished, 20261206190000_job_list_created_finished).
 */
const FOLDED = ['job_top_finished', 'job_top_created_finished'] as const

/**
 * Folds the finished-job counts that transactions wrote into rows of their own (FOLDED's `_tx`
 * tables) into one row per account, bucket, state and operation, one statement per table, and
 * drops the rows that come to 0. With `cutoff` (the purge's), then deletes the created-order
 * counters (job_top_created) of buckets and operations before it whose jobs are all gone (their
 * shards sum to 0; nothing counts a bucket that old up again: a job is created into the bucket of
 * now()). One transaction, under FOLD_LOCK_KEY: the only writer of the folded tables. `wait` waits
 * for a fold under way (the purge); otherwise (the schedule, LIST_FOLD_SECONDS) a fold under way
 * elsewhere makes this one return undefined.
 */
export async function foldListCounters (prisma: PrismaClient, opts: { cutoff?: Date, wait?: boolean } = {}): Promise<FoldResult | undefined> {
  return prisma.$transaction(async (tx) => {
    const [lock] = opts.wait === true
      ? await tx.$queryRaw<Array<{ ok: boolean }>>`SELECT true AS ok FROM pg_advisory_xact_lock(${FOLD_LOCK_KEY}::int8)`
      : await tx.$queryRaw<Array<{ ok: boolean }>>`SELECT pg_try_advisory_xact_lock(${FOLD_LOCK_KEY}::int8) AS ok`
    if (lock?.ok !== true) return undefined
    let folded = 0
    let emptied = 0
    for (const name of FOLDED) {
      const table = Prisma.raw(name)
      const rows = Prisma.raw(`${name}_tx`)
      const touched = await tx.$queryRaw<Array<{ owner_id: string, bucket: Date, state: string, operation: string, n: bigint, rows: bigint }>>`
        WITH gone AS (DELETE FROM ${rows} RETURNING owner_id, bucket, state, operation, n),
        sums AS (SELECT owner_id, bucket, state, operation, sum(n)::int8 AS n, count(*) AS rows FROM gone GROUP BY owner_id, bucket, state, operation),
        folded AS (
          INSERT INTO ${table} AS f (owner_id, bucket, state, operation, n) SELECT owner_id, bucket, state, operation, n FROM sums
          ON CONFLICT (owner_id, bucket, state, operation) DO UPDATE SET n = f.n + EXCLUDED.n
          RETURNING f.owner_id, f.bucket, f.state, f.operation, f.n
        )
        SELECT f.owner_id::text, f.bucket, f.state, f.operation, f.n, s.rows FROM folded f JOIN sums s USING (owner_id, bucket, state, operation)`
      folded += touched.reduce((sum, r) => sum + Number(r.rows), 0)
      const zero = touched.filter(r => r.n === 0n)
      if (zero.length > 0) {
        emptied += await tx.$executeRaw`
          DELETE FROM ${table} f
          USING unnest(${zero.map(r => r.owner_id)}::uuid[], ${zero.map(r => r.bucket)}::timestamptz[], ${zero.map(r => r.state)}::text[], ${zero.map(r => r.operation)}::text[]) AS z(owner_id, bucket, state, operation)
          WHERE f.owner_id = z.owner_id AND f.bucket = z.bucket AND f.state = z.state AND f.operation = z.operation AND f.n = 0`
      }
    }
    if (opts.cutoff !== undefined) {
      emptied += await tx.$executeRaw`
        DELETE FROM job_top_created c USING (
          SELECT owner_id, bucket, operation FROM job_top_created WHERE bucket < ${opts.cutoff} GROUP BY owner_id, bucket, operation HAVING sum(n) = 0
        ) z WHERE c.owner_id = z.owner_id AND c.bucket = z.bucket AND c.operation = z.operation`
    }
    return { folded, emptied }
  }, { timeout: 60_000 })
}

/** Deletes up to `limit` change events older than `cutoff` (they only serve SSE resumption). */
export async function purgeEvents (db: Db, cutoff: Date, limit: number): Promise<number> {
  return db.$executeRaw`
    DELETE FROM events WHERE id IN (SELECT id FROM events WHERE created_at < ${cutoff} ORDER BY id LIMIT ${limit})`
}

/** Leases a queued (or parked started) job to `owner`; undefined if someone has it or it is cancelled. */
export async function takeJob (db: Sql, owner: string, leaseSeconds: number, id: string, state: 'queued' | 'started'): Promise<TakenJob | undefined> {
  return (await query<TakenJob>(db, TAKE_SQL, [owner, leaseSeconds, id, state], 'clonejobs_take'))[0]
}
const TAKE_SQL = `
  UPDATE jobs SET state = 'started', locked_by = $1, locked_until = now() + make_interval(secs => $2::float8),
    attempts = attempts + 1, started_at = COALESCE(started_at, now()), last_modified = now()
  WHERE id = $3::uuid AND state = $4::text AND locked_by IS NULL AND NOT cancel_requested
  RETURNING id::text, owner_id::text, root_id::text, attempts`
