// Cloning (spec §2.9–2.11, §3.5): POST /drives/{uuid}/action/?do=clone and
// POST /servers/{uuid}/action/?do=clone. Each request writes, in one transaction, the new rows
// (destination drives in cloning_dst, the new server), one more reader on every source drive, and
// the jobs: one drive_clone, or a server_clone parent with one drive_clone child per disk, of
// which at most config.cloneParallelism run at once (the others are held back until a sibling
// finishes). The plugin registers the two job handlers and the two actions.
import { randomBytes, randomUUID } from 'node:crypto';
import fp from 'fastify-plugin';
import { ClonePlanError, HELD_RUN_AT, parseAvoidList, planDriveClone, planServerClone, startsAtOnce, vncPasswordFrom } from "../domain/clone-plan.js";
import { badMetaKey } from "../domain/drive-status.js";
import { relatedUuid, tagIds } from "../http/bodies.js";
import { errors } from "../http/errors.js";
import { enqueueJob } from "../jobs/enqueue.js";
import { driveCloneHandler } from "../jobs/handlers/drive-clone.js";
import { serverCloneHandler } from "../jobs/handlers/server-clone.js";
import { lockResources } from "../jobs/resources.js";
import { driveCloneBody, serverCloneBody } from "../schemas/clone.js";
import { registerServerAction } from "../routes/servers.js";
import { registerDriveAction } from "./drive-actions.js";
import { announceDrives, assertDriveUsable, driveToWire, loadOwnedDrive, lockDriveRows, maxDriveSize } from "./drives.js";
import { publishChange } from "./events.js";
import { replaceMounts } from "./mounts.js";
import { generateMac, serversToWire } from "./servers.js";
/** Turns a refused plan into the 400 the client sees. */
function planned(fn) {
    try {
        return fn();
    }
    catch (err) {
        if (err instanceof ClonePlanError)
            throw errors.validation(err.message, err.point);
        throw err;
    }
}
/** `avoid` (§2.11): validated as a list of uuids, otherwise advisory (unknown uuids are ignored). */
export function parseAvoid(raw) {
    return planned(() => parseAvoidList(raw));
}
/** Bytes the copy of a drive will move (its allocated blocks), for the job's bytes_total; 0 when unknown. */
async function dataBytes(storage, id) {
    try {
        return (await storage.stat(id)).allocated;
    }
    catch {
        return 0;
    }
}
function sourceOf(row) {
    return {
        name: row.name,
        size: Number(row.size),
        media: row.media,
        storageType: row.storageType,
        allowMultimount: row.allowMultimount,
        affinities: row.affinities,
        meta: (row.meta ?? {}),
        tags: row.tags
    };
}
/** A clone source must be readable now: mounted or unmounted, possibly already being cloned. */
function assertClonable(row) {
    assertDriveUsable(row, 'clone');
}
async function createDestination(tx, d) {
    await tx.drive.create({
        data: {
            id: d.id,
            ownerId: d.ownerId,
            name: d.def.name,
            size: BigInt(d.def.size),
            media: d.def.media,
            status: 'cloning_dst',
            storageType: d.def.storageType,
            allowMultimount: d.def.allowMultimount,
            affinities: d.def.affinities,
            meta: d.def.meta,
            tags: d.def.tags,
            lockedByJob: d.jobId
        }
    });
}
/** One more clone job reads the source: it shows cloning_src, and resize/delete answer 503. */
async function addReader(tx, sourceId) {
    await tx.drive.update({ where: { id: sourceId }, data: { readers: { increment: 1 } } });
}
function cloneResources(sourceId, driveId) {
    return [{ type: 'drives', id: sourceId, mode: 'read' }, { type: 'drives', id: driveId, mode: 'write' }];
}
// ---------------------------------------------------------------------------------------------
// Drive clone
export async function cloneDrive(deps, account, sourceId, input, avoid) {
    parseAvoid(avoid);
    if (input.meta) {
        const bad = badMetaKey(input.meta);
        if (bad !== undefined)
            throw errors.validation(`meta keys must be 1 to 32 characters long: ${JSON.stringify(bad.slice(0, 40))}`, 'meta');
    }
    const tags = input.tags ? tagIds(input.tags) : undefined;
    const ownerId = account.id;
    const id = randomUUID();
    const jobId = randomUUID();
    const bytesTotal = await dataBytes(deps.storage, sourceId.toLowerCase());
    const row = await deps.prisma.$transaction(async (tx) => {
        const source = await loadOwnedDrive(tx, ownerId, sourceId, { lock: true });
        assertClonable(source);
        const def = planned(() => planDriveClone(sourceOf(source), { ...input, tags }, account.cloneNaming, new Date(), maxDriveSize(deps.driveMaxSize)));
        const resources = cloneResources(source.id, id);
        await lockResources(tx, resources);
        await createDestination(tx, { id, jobId, ownerId, def });
        await addReader(tx, source.id);
        await enqueueJob(tx, {
            id: jobId,
            ownerId,
            operation: 'drive_clone',
            params: { sourceId: source.id, driveId: id, size: def.size },
            resources,
            ...(bytesTotal > 0 ? { bytesTotal } : {}),
            description: `cloning drive ${source.id}`
        });
        await announceDrives(tx, ownerId, [source.id, id]);
        return tx.drive.findUniqueOrThrow({ where: { id } });
    }, { timeout: 60_000 });
    return driveToWire(row, { jobIds: [jobId], serverIds: [] });
}
async function lockOwnedServer(tx, ownerId, id) {
    if (!relatedUuid(id))
        throw errors.notFound('Server', 'uuid');
    await tx.$queryRawUnsafe('SELECT id FROM servers WHERE id = $1::uuid FOR UPDATE', id.toLowerCase());
    const row = await tx.server.findFirst({ where: { id: id.toLowerCase(), ownerId, deleted: false } });
    if (!row)
        throw errors.notFound(`Server ${id}`, 'uuid');
    return row;
}
export async function cloneServer(deps, account, sourceServerId, input, avoid) {
    parseAvoid(avoid);
    const ownerId = account.id;
    const serverId = randomUUID();
    const parentId = randomUUID();
    // allocated bytes of each disk, read before the transaction (a stat per disk, no lock needed)
    const preMounts = relatedUuid(sourceServerId)
        ? await deps.prisma.serverDrive.findMany({ where: { serverId: sourceServerId.toLowerCase(), drive: { media: 'disk' } }, select: { driveId: true } })
        : [];
    const bytes = new Map();
    for (const m of preMounts)
        bytes.set(m.driveId, await dataBytes(deps.storage, m.driveId));
    const row = await deps.prisma.$transaction(async (tx) => {
        const source = await lockOwnedServer(tx, ownerId, sourceServerId);
        const mountRows = await tx.serverDrive.findMany({ where: { serverId: source.id }, orderBy: { position: 'asc' } });
        await lockDriveRows(tx, mountRows.map(m => m.driveId));
        const drives = new Map((await tx.drive.findMany({ where: { id: { in: mountRows.map(m => m.driveId) } } })).map(d => [d.id, d]));
        const mounts = mountRows.map(m => {
            const d = drives.get(m.driveId);
            return { driveId: m.driveId, device: m.device, devChannel: m.devChannel, bootOrder: m.bootOrder, media: d.media, driveName: d.name };
        });
        const taken = new Set();
        const plan = planned(() => planServerClone({ name: source.name, vncPassword: source.vncPassword, nics: (source.nics ?? []) }, mounts, input, account.cloneNaming, { newMac: () => { const mac = generateMac(taken); taken.add(mac); return mac; }, randomPassword: () => vncPasswordFrom(randomBytes(32)) }));
        // destinations, checked before anything is written
        const disks = [];
        for (const m of plan.mounts) {
            if (!m.clone)
                continue;
            const src = drives.get(m.clone.sourceId);
            assertClonable(src);
            const def = planned(() => planDriveClone(sourceOf(src), { name: m.clone.name }, account.cloneNaming));
            disks.push({ sourceId: src.id, driveId: randomUUID(), jobId: randomUUID(), def, bytes: bytes.get(src.id) ?? 0 });
        }
        const parentResources = [{ type: 'servers', id: source.id, mode: 'read' }, { type: 'servers', id: serverId, mode: 'write' }];
        await lockResources(tx, [...parentResources, ...disks.flatMap(d => cloneResources(d.sourceId, d.driveId))]);
        await tx.server.create({
            data: {
                id: serverId,
                ownerId,
                name: plan.name,
                cpu: source.cpu,
                mem: source.mem,
                smp: source.smp,
                vncPassword: plan.vncPassword,
                status: 'stopped',
                meta: source.meta ?? {},
                tags: source.tags,
                nics: plan.nics,
                extra: source.extra ?? {},
                lockedByJob: parentId
            }
        });
        for (const d of disks) {
            await createDestination(tx, { id: d.driveId, jobId: d.jobId, ownerId, def: d.def });
            await addReader(tx, d.sourceId);
        }
        // cdroms are shared; the new disks stay cloning_dst (syncMountStatus leaves held drives alone)
        let next = 0;
        await replaceMounts(tx, ownerId, serverId, plan.mounts.map(m => ({
            driveId: m.clone ? disks[next++].driveId : m.sharedDriveId,
            device: m.device,
            devChannel: m.devChannel,
            bootOrder: m.bootOrder
        })));
        await enqueueJob(tx, {
            id: parentId,
            ownerId,
            operation: 'server_clone',
            params: { sourceServerId: source.id, serverId, disks: disks.map(d => ({ sourceId: d.sourceId, driveId: d.driveId, jobId: d.jobId })) },
            resources: parentResources,
            description: `cloning server ${source.id} (${disks.length} disk${disks.length === 1 ? '' : 's'})`
        });
        for (const [index, d] of disks.entries()) {
            await enqueueJob(tx, {
                id: d.jobId,
                ownerId,
                operation: 'drive_clone',
                parentId,
                rootId: parentId,
                params: { sourceId: d.sourceId, driveId: d.driveId, size: d.def.size, index },
                resources: cloneResources(d.sourceId, d.driveId),
                ...(d.bytes > 0 ? { bytesTotal: d.bytes } : {}),
                description: `cloning drive ${d.sourceId}`,
                ...(startsAtOnce(index, deps.cloneParallelism) ? {} : { runAt: HELD_RUN_AT })
            });
        }
        await publishChange(tx, { ownerId, resourceType: 'servers', resourceId: serverId });
        await announceDrives(tx, ownerId, disks.flatMap(d => [d.sourceId, d.driveId]));
        return tx.server.findUniqueOrThrow({ where: { id: serverId } });
    }, { timeout: 60_000 });
    return (await serversToWire(deps.prisma, [row]))[0];
}
// ---------------------------------------------------------------------------------------------
// Actions and handlers
function depsOf(app) {
    return { prisma: app.prisma, storage: app.storage, driveMaxSize: app.config.driveMaxSize, cloneParallelism: app.config.cloneParallelism };
}
registerDriveAction('clone', {
    summary: 'Clone the drive (§2.9): 202 {"objects": [new drive]} in cloning_dst; a drive_clone job copies the data. Optional body: name, media, affinities, size (≥ source), storage_type, meta, tags. ?avoid=uuid,... is validated and advisory.',
    body: driveCloneBody,
    run: async ({ app, request, ownerId, uuid, body, query }) => {
        const drive = await cloneDrive(depsOf(app), { id: ownerId, cloneNaming: request.account.cloneNaming }, uuid, (body ?? {}), query.avoid);
        return { objects: [drive] };
    }
});
registerServerAction('clone', {
    summary: 'Clone the server (§3.5): 202 with the new, stopped server; disks are cloned by drive_clone children of one server_clone job, cdroms shared. Optional body: name, random_vnc_password.',
    body: serverCloneBody,
    run: async ({ app, request, ownerId, uuid, body, query }) => cloneServer(depsOf(app), { id: ownerId, cloneNaming: request.account.cloneNaming }, uuid, (body ?? {}), query.avoid)
});
/** Registers the drive_clone/server_clone handlers; the actions register when this module is imported. */
export default fp(async (app) => {
    // read at call time, so a test or bench that swaps app.storage is honoured
    const storage = () => app.storage;
    app.jobs.register('drive_clone', driveCloneHandler(storage));
    app.jobs.register('server_clone', serverCloneHandler(storage));
}, { name: 'clones', dependencies: ['prisma', 'jobs', 'storage'] });
//# sourceMappingURL=clones.js.map