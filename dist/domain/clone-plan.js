// Clone planning (spec §2.9–2.11, §3.5) as pure functions: `avoid` parsing, the definition of a
// drive clone and of a server clone (names, sizes, mounts, NICs), the held-back children of a
// server clone, and the progress line of a copy. No Fastify, no Prisma.
import { cloneName } from "./naming.js";
import { formatBytes } from "./progress.js";
/** Why a plan was refused: a 400 validation error at `point`. */
export class ClonePlanError extends Error {
    point;
    constructor(message, point) {
        super(message);
        this.point = point;
        this.name = 'ClonePlanError';
    }
}
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/**
 * `avoid=<uuid>[,<uuid>...]` (§2.11), given once or repeated: lowercase uuids in priority order,
 * duplicates dropped. Anything that is not a uuid is refused; unknown uuids are the caller's to
 * ignore (avoid is advisory).
 */
export function parseAvoidList(raw) {
    if (raw === undefined || raw === null)
        return [];
    const parts = (Array.isArray(raw) ? raw : [raw]).flatMap(v => String(v).split(',')).map(s => s.trim());
    const out = [];
    for (const p of parts) {
        if (p === '')
            continue;
        if (!UUID_RE.test(p))
            throw new ClonePlanError(`avoid must be a comma-separated list of drive or server uuids, got ${JSON.stringify(p.slice(0, 80))}`, 'avoid');
        const id = p.toLowerCase();
        if (!out.includes(id))
            out.push(id);
    }
    return out;
}
/** Storage types whose drives cannot be cloned (ephemeral, §2.9). */
export const UNCLONABLE_STORAGE = ['local_nvme'];
/**
 * The new drive's definition: the request's fields over the source's, the name from the naming
 * strategy when none is given, a size at least the source's (§2.9 "Magnesium"), meta and tags
 * copied unless given.
 */
export function planDriveClone(source, req, strategy, now = new Date(), maxSize = Number.MAX_SAFE_INTEGER) {
    if (UNCLONABLE_STORAGE.includes(source.storageType)) {
        throw new ClonePlanError(`${source.storageType} drives are ephemeral and cannot be cloned`, 'storage_type');
    }
    if (req.storage_type !== undefined && UNCLONABLE_STORAGE.includes(req.storage_type)) {
        throw new ClonePlanError(`cannot clone onto ${req.storage_type}: ephemeral drives are not clone targets`, 'storage_type');
    }
    const size = req.size ?? source.size;
    if (!Number.isSafeInteger(size) || size < source.size) {
        throw new ClonePlanError(`size must be at least the source drive's size (${source.size} bytes), got ${String(req.size)}`, 'size');
    }
    if (size > maxSize)
        throw new ClonePlanError(`size must be at most ${maxSize} bytes`, 'size');
    return {
        name: req.name ?? cloneName(source.name, strategy, now),
        size,
        media: req.media ?? source.media,
        storageType: req.storage_type ?? source.storageType,
        allowMultimount: req.allow_multimount ?? source.allowMultimount,
        affinities: req.affinities ?? [...source.affinities],
        meta: req.meta ?? { ...source.meta },
        tags: req.tags ?? [...source.tags]
    };
}
const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
/** 8 alphanumerics (§3.5 example "QR5coR4V") from random bytes (rejection-sampled, unbiased). */
export function vncPasswordFrom(bytes, length = 8) {
    let out = '';
    for (const b of bytes) {
        if (out.length === length)
            break;
        if (b < 248)
            out += ALNUM[b % 62]; // 248 = 4 * 62: no modulo bias
    }
    if (out.length < length)
        throw new RangeError('not enough random bytes for a password');
    return out;
}
/** A NIC of the clone: a new MAC, and every IP configuration turned into DHCP (§3.5). */
export function cloneNic(nic, newMac) {
    const dhcp = (c) => c === null ? null : c.conf === 'static' || c.ip !== null ? { conf: 'dhcp', ip: null } : { ...c };
    return { ...nic, mac: newMac, ip_v4_conf: dhcp(nic.ip_v4_conf), ip_v6_conf: dhcp(nic.ip_v6_conf) };
}
/**
 * The new server: every disk cloned to the same device/dev_channel/boot_order with a name from
 * the strategy, cdroms shared unchanged, NICs with new MACs and DHCP, the VNC password copied or
 * fresh.
 */
export function planServerClone(source, mounts, req, strategy, deps) {
    const now = deps.now ?? new Date();
    return {
        name: req.name ?? cloneName(source.name, strategy, now),
        vncPassword: req.random_vnc_password === true ? deps.randomPassword() : source.vncPassword,
        nics: source.nics.map(n => cloneNic(n, deps.newMac())),
        mounts: mounts.map(m => ({
            device: m.device,
            devChannel: m.devChannel,
            bootOrder: m.bootOrder,
            ...(m.media === 'disk'
                ? { clone: { sourceId: m.driveId, name: cloneName(m.driveName, strategy, now) } }
                : { sharedDriveId: m.driveId })
        }))
    };
}
// ---------------------------------------------------------------------------------------------
// Children of a server clone and copy progress
/**
 * run_at of children that wait for a free slot: far in the future, so the queue leaves them
 * alone until a finishing sibling releases one (or a cancel claims them for cleanup).
 */
export const HELD_RUN_AT = new Date('2999-01-01T00:00:00Z');
/** Which of `count` children start at once with `parallelism` slots: the first ones. */
export function startsAtOnce(index, parallelism) {
    return index < Math.max(1, parallelism);
}
/** "copied 1.2 of 10.0 GiB" */
export function copyDescription(bytesDone, bytesTotal) {
    return `copied ${formatBytes(bytesDone)} of ${formatBytes(bytesTotal)}`;
}
//# sourceMappingURL=clone-plan.js.map