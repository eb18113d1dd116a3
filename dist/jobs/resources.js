import { errors } from "../http/errors.js";
import { UNFINISHED } from "./queue-sql.js";
/** Unfinished jobs (outside the tree `exceptRootId`) whose links conflict with `wanted`. */
export async function findConflicts(tx, wanted, exceptRootId) {
    if (wanted.length === 0)
        return [];
    return tx.$queryRawUnsafe(`
    SELECT r.resource_type AS type, r.resource_id::text AS id, j.id::text AS "jobId", j.operation, r.mode
    FROM unnest($1::text[], $2::uuid[], $3::text[]) AS w(type, id, mode)
    JOIN job_resources r ON r.resource_type = w.type AND r.resource_id = w.id
    JOIN jobs j ON j.id = r.job_id
    WHERE j.state IN ${UNFINISHED}
      AND (w.mode = 'write' OR r.mode = 'write')
      AND ($4::uuid IS NULL OR j.root_id <> $4::uuid)
    ORDER BY j.created`, wanted.map(w => w.type), wanted.map(w => w.id), wanted.map(w => w.mode ?? 'write'), exceptRootId ?? null);
}
/**
 * Takes transaction-scoped advisory locks on the resources (in a fixed order, so two callers
 * cannot deadlock) and throws 503 concurrency when an unfinished job holds them in a conflicting
 * way. Call it before enqueueJob in the same transaction; the locks last until it commits.
 */
export async function lockResources(tx, wanted, opts = {}) {
    const keys = [...new Set(wanted.map(w => `${w.type}:${w.id.toLowerCase()}`))].sort();
    for (const key of keys)
        await tx.$executeRawUnsafe('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', key);
    const conflicts = await findConflicts(tx, wanted, opts.exceptRootId);
    if (conflicts.length > 0) {
        const c = conflicts[0];
        throw errors.busy(`${c.type === 'drives' ? 'Drive' : 'Server'} ${c.id} is busy with the ${c.operation} job ${c.jobId}`, c.type === 'drives' ? 'drive' : 'server');
    }
}
/** Same check without locking, for a quick answer outside a transaction that enqueues. */
export async function assertNotBusy(tx, wanted) {
    const conflicts = await findConflicts(tx, wanted);
    if (conflicts.length > 0) {
        const c = conflicts[0];
        throw errors.busy(`${c.type === 'drives' ? 'Drive' : 'Server'} ${c.id} is busy with the ${c.operation} job ${c.jobId}`, c.type === 'drives' ? 'drive' : 'server');
    }
}
//# sourceMappingURL=resources.js.map