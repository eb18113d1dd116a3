// Drive status rules (spec §2.2), as pure functions: which operations each status allows, the
// status a drive returns to, and the status shown on the wire.
export const DRIVE_STATUSES = [
    'creating', 'unmounted', 'mounted', 'resizing', 'cloning_dst', 'cloning_src', 'uploading', 'unavailable'
];
/** Statuses a drive rests in when no job holds it. */
export const RESTING_STATUSES = ['unmounted', 'mounted'];
/** Statuses in which a job holds the drive exclusively; they always end on their own. */
export const TRANSIENT_STATUSES = ['creating', 'resizing', 'cloning_dst', 'uploading'];
export const MEDIA = ['disk', 'cdrom'];
export const STORAGE_TYPES = ['magnetic', 'ssd', 'dssd', 'zadara', 'nvme', 'local_nvme'];
export const DEFAULT_STORAGE_TYPE = 'dssd';
/** The status shown to clients: a resting drive being read by clone jobs shows `cloning_src`. */
export function displayStatus(status, readers) {
    if (readers > 0 && RESTING_STATUSES.includes(status))
        return 'cloning_src';
    return status;
}
const READS = ['clone', 'download', 'mount'];
/** Whether `op` may start on a drive whose stored status is `status` with `readers` clone jobs reading it. */
export function canOperate(op, status, readers = 0) {
    if (op === 'edit')
        return 'ok';
    if (TRANSIENT_STATUSES.includes(status))
        return 'busy';
    if (status === 'unavailable')
        return op === 'delete' ? 'ok' : 'wrong_state';
    if (!RESTING_STATUSES.includes(status))
        return 'wrong_state';
    // several clones may read one source at once; nothing may change its data meanwhile
    if (readers > 0 && !READS.includes(op))
        return 'busy';
    return 'ok';
}
/** The status a drive returns to when the job holding it ends. */
export function restingStatus(mountCount) {
    return mountCount > 0 ? 'mounted' : 'unmounted';
}
/** Server statuses in which the server uses its drives ("running" in §2.6–§2.8). */
export const ACTIVE_SERVER_STATUSES = ['starting', 'running', 'stopping', 'paused'];
export function isServerActive(status) {
    return ACTIVE_SERVER_STATUSES.includes(status);
}
/**
 * Which fields of a PUT apply (§2.6): all editable ones, or only name/meta/tags/allow_multimount
 * while the drive is mounted on a running server (the others are silently ignored).
 */
export const ALWAYS_EDITABLE = ['name', 'meta', 'tags', 'allow_multimount'];
export const EDITABLE = [...ALWAYS_EDITABLE, 'size', 'media', 'affinities', 'iops'];
export function editableFields(mountedOnActiveServer) {
    return mountedOnActiveServer ? ALWAYS_EDITABLE : EDITABLE;
}
/** runtime flags of a storage type (§2.1): local_nvme is ephemeral, not downloadable or snapshotable. */
export function runtimeFlags(storageType, status) {
    const ephemeral = storageType === 'local_nvme';
    return {
        is_downloadable: !ephemeral,
        is_ephemeral: ephemeral,
        is_snapshotable: status === 'creating' ? null : !ephemeral
    };
}
/** A meta dict is string→string with keys of at most 32 characters (§2.12); returns the bad key. */
export function badMetaKey(meta) {
    return Object.keys(meta).find(k => k.length === 0 || k.length > 32);
}
//# sourceMappingURL=drive-status.js.map