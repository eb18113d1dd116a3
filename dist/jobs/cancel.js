import { publishChange } from "../services/events.js";
import { CHANNELS } from "./listener.js";
import { cancelSubtrees } from "./queue-sql.js";
/** Requests cancellation of jobs (and their descendants) inside `tx`; NOTIFYs go out at commit. */
export async function requestCancel(tx, ids, opts = {}) {
    const rows = await cancelSubtrees(tx, ids, opts);
    if (rows.length === 0)
        return rows;
    await notifyCancelled(tx, rows);
    return rows;
}
export async function notifyCancelled(db, rows) {
    await db.$executeRawUnsafe('SELECT pg_notify($1, x) FROM unnest($2::text[]) AS x', CHANNELS.cancel, rows.map(r => r.id));
    await db.$executeRawUnsafe('SELECT pg_notify($1, x) FROM unnest($2::text[]) AS x', CHANNELS.jobs, rows.filter(r => !r.locked_by).map(r => r.id));
    await publishChange(db, jobChanges(rows));
}
/** Change events for jobs and, once each, the roots of their trees (whose roll-up moved). */
export function jobChanges(rows) {
    const seen = new Set();
    const out = [];
    for (const r of rows) {
        for (const id of [r.id, r.root_id]) {
            if (seen.has(id))
                continue;
            seen.add(id);
            out.push({ ownerId: r.owner_id, resourceType: 'jobs', resourceId: id });
        }
    }
    return out;
}
//# sourceMappingURL=cancel.js.map