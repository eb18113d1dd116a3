import { rollUp } from "../domain/progress.js";
import { isoTime, ref, uri } from "../http/uris.js";
export function jobToWire(row, children = [], childNodes = []) {
    const p = rollUp({ ...nodeOf(row), children: childNodes });
    const data = { progress: p.progress };
    if (p.description)
        data.description = p.description;
    data.bytes_done = p.bytesDone;
    if (p.bytesTotal !== null)
        data.bytes_total = p.bytesTotal;
    if (p.etaSeconds !== null)
        data.eta_seconds = p.etaSeconds;
    return {
        uuid: row.id,
        resource_uri: uri('jobs', row.id),
        operation: row.operation,
        state: row.state,
        data,
        created: isoTime(row.created),
        last_modified: isoTime(row.lastModified),
        started_at: isoTime(row.startedAt),
        finished_at: isoTime(row.finishedAt),
        resources: row.resources,
        parent: row.parentId ? ref('jobs', row.parentId) : null,
        error: row.error ?? null,
        ...(row.result !== null && row.result !== undefined ? { result: row.result } : {}),
        children
    };
}
function nodeOf(row) {
    return {
        state: row.state,
        progress: row.progress,
        bytesDone: Number(row.bytesDone),
        bytesTotal: row.bytesTotal === null ? null : Number(row.bytesTotal),
        etaSeconds: row.etaSeconds,
        description: row.description,
        children: []
    };
}
/** Nests `rows` (a whole tree, any order) under their parents, starting at `rootId`. */
export function buildTree(rows, rootId) {
    const byParent = new Map();
    let root;
    for (const r of rows) {
        if (r.id === rootId)
            root = r;
        if (r.parentId) {
            const list = byParent.get(r.parentId) ?? [];
            list.push(r);
            byParent.set(r.parentId, list);
        }
    }
    const build = (row) => {
        const kids = (byParent.get(row.id) ?? [])
            .sort((a, b) => a.created.getTime() - b.created.getTime() || a.id.localeCompare(b.id))
            .map(build);
        const node = { ...nodeOf(row), children: kids.map(k => k.node) };
        return { wire: jobToWire(row, kids.map(k => k.wire), node.children), node };
    };
    return root ? build(root).wire : undefined;
}
/** One job of `ownerId` with its nested children, or undefined (missing or another account's). */
export async function loadJobWire(prisma, ownerId, id) {
    const row = await prisma.job.findFirst({ where: { id, ownerId } });
    if (!row)
        return undefined;
    const tree = await prisma.job.findMany({ where: { rootId: row.rootId } });
    return buildTree(tree, row.id);
}
/** Many top-level jobs with their trees, in the order given, in two queries. */
export async function loadTrees(prisma, rows) {
    const roots = rows.map(r => r.rootId);
    const all = roots.length === 0
        ? []
        : await prisma.job.findMany({ where: { rootId: { in: [...new Set(roots)] }, NOT: { id: { in: rows.map(r => r.id) } } } });
    const byRoot = new Map();
    for (const r of all) {
        const list = byRoot.get(r.rootId) ?? [];
        list.push(r);
        byRoot.set(r.rootId, list);
    }
    return rows.map(r => buildTree([r, ...(byRoot.get(r.rootId) ?? [])], r.id) ?? jobToWire(r));
}
/**
 * The `jobs` field of drives or servers: for each id, links to the jobs that touch it (through
 * job_resources), newest first. Purged jobs are gone from job_resources too.
 */
export async function jobRefsFor(prisma, type, ids) {
    const out = new Map(ids.map(id => [id, []]));
    if (ids.length === 0)
        return out;
    const rows = await prisma.$queryRawUnsafe(`
    SELECT r.resource_id::text, j.id::text AS job_id FROM job_resources r JOIN jobs j ON j.id = r.job_id
    WHERE r.resource_type = $1 AND r.resource_id = ANY($2::uuid[])
    ORDER BY j.created DESC, j.id`, type, ids);
    for (const r of rows)
        out.get(r.resource_id)?.push(ref('jobs', r.job_id));
    return out;
}
//# sourceMappingURL=jobs-view.js.map