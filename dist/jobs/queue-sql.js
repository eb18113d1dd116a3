import { CHANNELS } from "./listener.js";
export const UNFINISHED = '(\'queued\', \'started\', \'cancelling\')';
/**
 * CTEs that publish change events (events rows + NOTIFY, like publishChange) for the jobs of the
 * CTE `src` (columns id, owner_id, root_id) and their roots, in the same statement.
 */
function publishCtes(src) {
    return `
    ev AS (
      INSERT INTO events (owner_id, resource_type, resource_id, resource_uri)
      SELECT DISTINCT ON (u.rid) s.owner_id, 'jobs', u.rid, '/api/2.0/jobs/' || u.rid || '/'
      FROM ${src} s CROSS JOIN LATERAL unnest(ARRAY[s.id::text, s.root_id::text]) AS u(rid)
      RETURNING id, owner_id, resource_type, resource_id
    ),
    notified AS (
      SELECT count(*) AS n FROM (
        SELECT pg_notify('${CHANNELS.events}', json_build_object('id', id::text, 'o', owner_id, 't', resource_type, 'r', resource_id)::text)
        FROM (SELECT * FROM ev ORDER BY id) e
      ) x
    )`;
}
/**
 * Claims up to `limit` runnable jobs:
 * - unlocked queued/started/cancelling jobs that are due (or cancelled) and have no unfinished
 *   child: plain jobs, parents whose children are all done, jobs given back on shutdown;
 * - started/cancelling jobs whose lease expired (their process died): a takeover.
 * SKIP LOCKED lets many processes claim at once without ever handing one job to two of them.
 */
export async function claimJobs(prisma, workerId, leaseSeconds, limit) {
    return prisma.$queryRawUnsafe(`
    WITH ready AS (
      SELECT j.id, j.locked_by IS NOT NULL AS taken_over FROM jobs j
      WHERE j.state IN ${UNFINISHED}
        AND (
          (j.locked_by IS NULL AND (j.run_at <= now() OR j.cancel_requested)
            AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = j.id AND c.state IN ${UNFINISHED}))
          OR (j.locked_by IS NOT NULL AND j.locked_until < now())
        )
      ORDER BY j.cancel_requested DESC, j.priority DESC, j.run_at, j.created
      LIMIT $3
      FOR UPDATE SKIP LOCKED
    ),
    claimed AS (
      UPDATE jobs j SET
        state = CASE WHEN j.state = 'queued' THEN 'started' ELSE j.state END,
        locked_by = $1,
        locked_until = now() + make_interval(secs => $2),
        attempts = j.attempts + 1,
        started_at = COALESCE(j.started_at, now()),
        last_modified = now()
      FROM ready
      WHERE j.id = ready.id
      RETURNING j.id, j.owner_id, j.operation, j.parent_id, j.root_id, j.params, j.checkpoint, j.attempts,
                j.max_attempts, j.cancel_requested, ready.taken_over, j.run_at, j.created
    ),
    ${publishCtes('claimed')}
    SELECT c.id::text, c.owner_id::text, c.operation, c.parent_id::text, c.root_id::text, c.params,
           c.checkpoint, c.attempts, c.max_attempts, c.cancel_requested, c.taken_over,
           EXISTS (SELECT 1 FROM jobs k WHERE k.parent_id = c.id) AS has_children,
           (extract(epoch FROM now() - GREATEST(c.run_at, c.created)) * 1000)::float8 AS claim_latency_ms,
           (SELECT n FROM notified)::int AS published
    FROM claimed c`, workerId, leaseSeconds, limit);
}
/** Marks the queued ancestors of just-claimed jobs started: a parent is started while children run. */
export async function startAncestors(db, ids) {
    if (ids.length === 0)
        return [];
    return db.$queryRawUnsafe(`
    WITH RECURSIVE anc AS (
      SELECT parent_id AS id FROM jobs WHERE id = ANY($1::uuid[]) AND parent_id IS NOT NULL
      UNION
      SELECT j.parent_id FROM jobs j JOIN anc ON j.id = anc.id WHERE j.parent_id IS NOT NULL
    )
    UPDATE jobs SET state = 'started', started_at = COALESCE(started_at, now()), last_modified = now()
    WHERE id IN (SELECT id FROM anc) AND state = 'queued'
    RETURNING id::text, owner_id::text, root_id::text`, ids);
}
/** Renews the leases this worker holds; returns the ids still held and whether each is cancelled. */
export async function heartbeat(prisma, workerId, ids, leaseSeconds) {
    if (ids.length === 0)
        return [];
    return prisma.$queryRawUnsafe(`
    UPDATE jobs SET locked_until = now() + make_interval(secs => $3)
    WHERE id = ANY($2::uuid[]) AND locked_by = $1
    RETURNING id::text, cancel_requested`, workerId, ids, leaseSeconds);
}
/**
 * Records the end of a job this worker holds, publishes it and wakes the workers for its parent,
 * in one statement; undefined when the lease was lost meanwhile.
 */
export async function finishJob(db, workerId, id, f) {
    const rows = await db.$queryRawUnsafe(`
    WITH f AS (
      UPDATE jobs SET state = $3, result = $4::jsonb, error = $5::jsonb,
        progress = CASE WHEN $3 = 'success' THEN 100 ELSE progress END,
        bytes_done = CASE WHEN $3 = 'success' AND bytes_total IS NOT NULL THEN bytes_total ELSE bytes_done END,
        eta_seconds = NULL, locked_by = NULL, locked_until = NULL,
        finished_at = now(), last_modified = now()
      WHERE id = $2::uuid AND locked_by = $1
      RETURNING id, owner_id, root_id, parent_id, (extract(epoch FROM now() - COALESCE(started_at, created)))::float8 AS duration_s
    ),
    ${publishCtes('f')},
    woken AS (
      SELECT count(*) AS n FROM (SELECT pg_notify('${CHANNELS.jobs}', parent_id::text) FROM f WHERE parent_id IS NOT NULL) x
    )
    SELECT f.id::text, f.owner_id::text, f.root_id::text, f.parent_id::text, f.duration_s,
           (SELECT n FROM notified)::int + (SELECT n FROM woken)::int AS published
    FROM f`, workerId, id, f.state, JSON.stringify(f.result ?? null), f.error ? JSON.stringify(f.error) : null);
    return rows[0];
}
/** Gives jobs back to the queue on graceful shutdown, so another process picks them up at once. */
export async function releaseJobs(prisma, workerId, ids) {
    if (ids.length === 0)
        return;
    await prisma.$executeRawUnsafe(`
    UPDATE jobs SET state = CASE WHEN state = 'started' THEN 'queued' ELSE state END,
      locked_by = NULL, locked_until = NULL, last_modified = now()
    WHERE id = ANY($2::uuid[]) AND locked_by = $1`, workerId, ids);
}
/**
 * Requests cancellation of the unfinished jobs in the subtrees under `ids` (the jobs themselves
 * included unless `childrenOnly`). Running ones are aborted by their process; the others are
 * claimed for cleanup.
 */
export async function cancelSubtrees(db, ids, opts = {}) {
    if (ids.length === 0)
        return [];
    const start = opts.childrenOnly
        ? 'SELECT id FROM jobs WHERE parent_id = ANY($1::uuid[]) AND id IS DISTINCT FROM $2::uuid'
        : 'SELECT id FROM jobs WHERE id = ANY($1::uuid[]) AND id IS DISTINCT FROM $2::uuid';
    return db.$queryRawUnsafe(`
    WITH RECURSIVE tree AS (
      ${start}
      UNION ALL
      SELECT j.id FROM jobs j JOIN tree t ON j.parent_id = t.id
    )
    UPDATE jobs SET cancel_requested = true, state = 'cancelling', last_modified = now()
    -- jobs already being cancelled are left alone: two cancelled siblings settling at once would
    -- otherwise each wait for the other's row lock
    WHERE id IN (SELECT id FROM tree) AND state IN ${UNFINISHED} AND NOT cancel_requested
    RETURNING id::text, owner_id::text, root_id::text, locked_by`, ids, opts.except ?? null);
}
/** The outcome of a parent's children: the first failure (error before cancelled), if any. */
export async function childOutcome(db, parentId) {
    const rows = await db.$queryRawUnsafe(`
    SELECT state, error FROM jobs WHERE parent_id = $1::uuid AND state IN ('error', 'cancelled')
    ORDER BY state = 'error' DESC, finished_at LIMIT 1`, parentId);
    return rows[0];
}
/** Deletes up to `limit` finished top-level jobs (and their trees) finished before `cutoff`. */
export async function purgeBatch(db, cutoff, limit) {
    const rows = await db.$queryRawUnsafe(`
    WITH roots AS (
      SELECT id FROM jobs
      WHERE parent_id IS NULL AND state IN ('success', 'error', 'cancelled') AND finished_at < $1
      ORDER BY finished_at LIMIT $2
    ), gone AS (
      DELETE FROM jobs WHERE root_id IN (SELECT id FROM roots) RETURNING parent_id
    )
    SELECT count(*) FILTER (WHERE parent_id IS NULL)::int AS n FROM gone`, cutoff, limit);
    return rows[0]?.n ?? 0;
}
/** Deletes up to `limit` change events older than `cutoff` (they only serve SSE resumption). */
export async function purgeEvents(db, cutoff, limit) {
    return db.$executeRawUnsafe(`
    DELETE FROM events WHERE id IN (SELECT id FROM events WHERE created_at < $1 ORDER BY id LIMIT $2)`, cutoff, limit);
}
//# sourceMappingURL=queue-sql.js.map