// Creating jobs, always inside the caller's transaction, so a job row exists exactly when the
// domain change that needs it was committed.
import { randomUUID } from 'node:crypto';
import { uri } from "../http/uris.js";
import { publishChange } from "../services/events.js";
import { CHANNELS } from "./listener.js";
export const JOBS_CHANNEL = CHANNELS.jobs;
export async function enqueueJob(tx, input) {
    const id = input.id ?? randomUUID();
    const resources = input.resources ?? [];
    let rootId = input.rootId ?? id;
    if (input.parentId && !input.rootId) {
        const parent = await tx.job.findUnique({ where: { id: input.parentId }, select: { rootId: true } });
        if (!parent)
            throw new Error(`enqueueJob: parent job ${input.parentId} does not exist`);
        rootId = parent.rootId;
    }
    await tx.job.create({
        data: {
            id,
            ownerId: input.ownerId,
            operation: input.operation,
            state: 'queued',
            params: (input.params ?? {}),
            parentId: input.parentId ?? null,
            rootId,
            resources: resources.map(r => uri(r.type, r.id)),
            bytesTotal: input.bytesTotal === undefined ? null : BigInt(input.bytesTotal),
            description: input.description ?? null,
            runAt: input.runAt ?? new Date(),
            maxAttempts: input.maxAttempts ?? 3,
            links: { create: resources.map(r => ({ resourceType: r.type, resourceId: r.id, mode: r.mode ?? 'write' })) }
        }
    });
    // delivered when the transaction commits: wakes idle workers in every process
    await tx.$executeRaw `SELECT pg_notify(${JOBS_CHANNEL}, ${id})`;
    await publishChange(tx, rootId === id
        ? { ownerId: input.ownerId, resourceType: 'jobs', resourceId: id }
        : [{ ownerId: input.ownerId, resourceType: 'jobs', resourceId: id }, { ownerId: input.ownerId, resourceType: 'jobs', resourceId: rootId }]);
    return { id };
}
//# sourceMappingURL=enqueue.js.map