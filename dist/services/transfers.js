// Uploads and downloads of drive images (spec §5, decisions.md "Uploads and downloads").
//
// Every transfer is a job. Bytes arrive or leave in an HTTP request, so the request itself holds
// the job's lease ("request-held" jobs, worker id `<engine worker>:transfers`): it heartbeats,
// reports byte progress, listens for cancels and records the outcome. If the process dies, the
// lease expires and the engine takes the job over; the drive_upload / drive_download handlers
// then undo what is left (see src/jobs/handlers/drive-upload.ts).
//
// A chunked upload is different: it lasts as long as the client wants, across requests and
// restarts, so its state lives in upload_chunks rows. Its job is `started` with no lease and a
// `run_at` deadline that every chunk pushes forward. When the last chunk is stored the job is made
// due at once; the engine runs the handler, which hashes the image and finishes the upload. If the
// deadline passes first the handler discards the drive.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { chunkCount, chunkRange } from "../domain/chunks.js";
import { percentOf } from "../domain/progress.js";
import { DEFAULT_STORAGE_TYPE } from "../domain/drive-status.js";
import { ApiError, errors } from "../http/errors.js";
import { API, ref } from "../http/uris.js";
import { requestCancel, jobChanges } from "../jobs/cancel.js";
import { enqueueJob } from "../jobs/enqueue.js";
import { CHANNELS } from "../jobs/listener.js";
import { finishJob, heartbeat } from "../jobs/queue-sql.js";
import { publishChange } from "./events.js";
import { announceDrives, assertDriveUsable, drivesToWire, loadOwnedDrive, maxDriveSize, restingStatusOf } from "./drives.js";
const MiB = 1024 * 1024;
/** A chunked upload with no new chunk for this long is abandoned and its drive removed. */
export const CHUNKED_UPLOAD_IDLE_SECONDS = 24 * 3600;
/** Request-held jobs are parked this far in the future so no worker claims them meanwhile. */
const PARKED_MS = 365 * 24 * 3600 * 1000;
const PROGRESS_INTERVAL_MS = 250;
export function transferDeps(app) {
    return {
        prisma: app.prisma,
        storage: app.storage,
        log: app.log,
        config: app.config,
        workerId: `${app.jobs.workerId}:transfers`,
        listener: app.jobListener
    };
}
export function uploadMax(deps) {
    return maxDriveSize(deps.config.driveMaxSize);
}
const TOKEN_RE = /^[A-Za-z0-9_-]{43}$/;
/** 32 random bytes, base64url: the link carries the token, the database only its sha256. */
export function newToken() {
    const token = randomBytes(32).toString('base64url');
    return { token, hash: hashToken(token) };
}
export function hashToken(token) {
    return createHash('sha256').update(token).digest('hex');
}
export function chunkLinkPath(token) {
    return `${API}/uploads/${token}/`;
}
export function downloadLinkPath(token) {
    return `${API}/downloads/${token}/`;
}
/** The link of a token; unknown → 404, expired → 410. */
export async function findLink(db, token, purpose) {
    const link = TOKEN_RE.test(token) ? await db.transferLink.findUnique({ where: { tokenHash: hashToken(token) } }) : null;
    if (!link || link.purpose !== purpose)
        throw errors.notFound('Link', 'token');
    if (link.expiresAt.getTime() <= Date.now())
        throw errors.gone('This link has expired; ask for a new one');
    return link;
}
/** Enqueues a job that this request holds and runs itself (state started, leased to deps.workerId). */
export async function createHeldJob(tx, deps, input) {
    const { id } = await enqueueJob(tx, { ...input, runAt: new Date(Date.now() + PARKED_MS), maxAttempts: 1 });
    const rows = await holdJob(tx, deps, id, 'queued');
    if (!rows)
        throw new Error(`job ${id} could not be held`);
    return rows;
}
/** Takes the lease of a queued (or parked started) job; undefined if someone else has it or it is cancelled. */
export async function holdJob(db, deps, id, state) {
    const rows = await db.$queryRawUnsafe(`
    UPDATE jobs SET state = 'started', locked_by = $1, locked_until = now() + make_interval(secs => $2),
      attempts = attempts + 1, started_at = COALESCE(started_at, now()), last_modified = now()
    WHERE id = $3::uuid AND state = $4 AND locked_by IS NULL AND NOT cancel_requested
    RETURNING id::text, owner_id::text, root_id::text`, deps.workerId, deps.config.jobLeaseSeconds, id, state);
    return rows[0];
}
/**
 * The lease of a job held by a request: heartbeats it, reports progress a few times a second,
 * aborts `signal` on cancel or a lost lease, and records the outcome.
 */
export class HeldJob {
    deps;
    row;
    bytesTotal;
    controller = new AbortController();
    timer;
    unlisten;
    lastWrite = 0;
    pending;
    bytesDone = 0;
    startedAt = Date.now();
    finished = false;
    cancelled = false;
    constructor(deps, row, bytesTotal) {
        this.deps = deps;
        this.row = row;
        this.bytesTotal = bytesTotal;
        const beat = Math.min(1000, Math.max(250, Math.floor(deps.config.jobLeaseSeconds * 1000 / 3)));
        this.timer = setInterval(() => { void this.beat(); }, beat);
        this.timer.unref();
        this.unlisten = deps.listener?.on(CHANNELS.cancel, (id) => { if (id === row.id)
            this.cancel(); });
    }
    get id() { return this.row.id; }
    get signal() { return this.controller.signal; }
    cancel() {
        if (this.controller.signal.aborted)
            return;
        this.cancelled = true;
        this.controller.abort(errors.validation('The job was cancelled'));
    }
    async beat() {
        try {
            const held = await heartbeat(this.deps.prisma, this.deps.workerId, [this.row.id], this.deps.config.jobLeaseSeconds);
            if (held.length === 0)
                this.controller.abort(errors.busy('The job lease was lost'));
            else if (held[0].cancel_requested)
                this.cancel();
        }
        catch (err) {
            this.deps.log.warn({ err, job: this.row.id }, 'transfer heartbeat failed');
        }
    }
    /** Bytes moved so far (throttled to a few database writes per second). */
    progress(bytesDone, bytesTotal) {
        this.bytesDone = bytesDone;
        if (bytesTotal !== undefined)
            this.bytesTotal = bytesTotal;
        const wait = PROGRESS_INTERVAL_MS - (Date.now() - this.lastWrite);
        if (wait <= 0)
            this.writeProgress();
        else if (!this.pending) {
            this.pending = setTimeout(() => { this.pending = undefined; this.writeProgress(); }, wait);
            this.pending.unref();
        }
    }
    writeProgress() {
        if (this.finished)
            return;
        this.lastWrite = Date.now();
        const done = this.bytesDone;
        const total = this.bytesTotal;
        const elapsed = (Date.now() - this.startedAt) / 1000;
        const eta = total && done > 0 && elapsed >= 0.5 && done < total ? Math.round(elapsed * (total - done) / done) : null;
        const { prisma, workerId } = this.deps;
        prisma.job.updateMany({
            where: { id: this.row.id, lockedBy: workerId },
            data: {
                bytesDone: BigInt(done),
                ...(total !== null ? { bytesTotal: BigInt(total) } : {}),
                ...(total !== null ? { progress: percentOf(done, total) } : {}),
                etaSeconds: eta,
                lastModified: new Date()
            }
        }).then(r => r.count > 0 ? publishChange(prisma, jobChanges([this.row])) : undefined)
            .catch(err => this.deps.log.warn({ err, job: this.row.id }, 'transfer progress write failed'));
    }
    stop() {
        this.finished = true;
        clearInterval(this.timer);
        clearTimeout(this.pending);
        this.unlisten?.();
    }
    /** Records the outcome inside `tx` (with the domain change that goes with it). */
    async finish(tx, fields) {
        this.stop();
        const done = await finishJob(tx, this.deps.workerId, this.row.id, fields);
        if (done)
            await publishChange(tx, jobChanges([done]));
    }
    /** Records a failure (its own transaction); never throws. */
    async fail(err) {
        this.stop();
        const state = this.cancelled ? 'cancelled' : 'error';
        const error = this.cancelled
            ? { error_type: 'cancelled', error_message: 'The job was cancelled' }
            : { error_type: err instanceof ApiError ? err.errorType : 'backend', error_message: err instanceof ApiError ? err.message : 'the transfer failed' };
        try {
            await this.deps.prisma.$transaction(async (tx) => this.finish(tx, { state, error }));
        }
        catch (e) {
            this.deps.log.error({ err: e, job: this.row.id }, 'could not record the end of a transfer job');
        }
    }
}
// ---------------------------------------------------------------------------------------------
// Streams
class BodyTooLong extends Error {
}
/** Counts (and optionally hashes) the bytes passing through; fails past `limit` bytes. */
export class Meter extends Transform {
    limit;
    hashing;
    onBytes;
    bytes = 0;
    hash = createHash('sha256');
    constructor(limit, hashing, onBytes) {
        super({ highWaterMark: MiB });
        this.limit = limit;
        this.hashing = hashing;
        this.onBytes = onBytes;
    }
    _transform(chunk, _enc, cb) {
        if (this.bytes + chunk.length > this.limit) {
            cb(new BodyTooLong(`more than ${this.limit} bytes`));
            return;
        }
        this.bytes += chunk.length;
        if (this.hashing)
            this.hash.update(chunk);
        this.onBytes?.(this.bytes);
        cb(null, chunk);
    }
    digest() {
        return this.hash.digest('hex');
    }
}
/**
 * A write stream into drive `id` that grows the image as data arrives (sizes unknown up front,
 * e.g. a multipart file), up to `max` bytes. Growth is a sparse truncate; the final size is
 * exactly the bytes written.
 */
export function growingWriteStream(storage, id, max) {
    let writer;
    let pos = 0;
    let capacity = 0;
    const ensure = async (need) => {
        if (writer && need <= writer.size)
            return writer;
        if (need > max)
            throw new BodyTooLong(`more than ${max} bytes`);
        await writer?.close();
        writer = undefined;
        capacity = Math.min(max, Math.max(need, capacity * 2, 64 * MiB));
        await storage.resize(id, capacity);
        writer = await storage.openForWrite(id);
        return writer;
    };
    const put = async (data) => {
        const w = await ensure(pos + data.length);
        await w.write(data, pos);
        pos += data.length;
    };
    const stream = new Writable({
        highWaterMark: MiB,
        write(chunk, _enc, cb) { put(chunk).then(() => cb(), cb); },
        writev(chunks, cb) { put(Buffer.concat(chunks.map(c => c.chunk))).then(() => cb(), cb); },
        final(cb) {
            (async () => {
                await writer?.close();
                await storage.resize(id, pos);
            })().then(() => cb(), cb);
        },
        destroy(err, cb) {
            const w = writer;
            writer = undefined;
            void (w ? w.close().catch(() => { }) : Promise.resolve()).then(() => cb(err));
        }
    });
    return Object.assign(stream, { bytes: () => pos });
}
/** sha256 of an image, read as a stream; `onBytes` sees the bytes hashed so far. */
export async function hashDrive(storage, id, signal, onBytes) {
    const meter = new Meter(Number.MAX_SAFE_INTEGER, true, onBytes);
    const sink = new Writable({ highWaterMark: 4 * MiB, write(_c, _e, cb) { cb(); }, writev(_c, cb) { cb(); } });
    await pipeline(await storage.createReadStream(id), meter, sink, { signal });
    return { sha256: meter.digest(), bytes: meter.bytes };
}
async function createUploadingDrive(tx, ownerId, id, jobId, input) {
    await tx.drive.create({
        data: {
            id,
            ownerId,
            name: input.name,
            size: BigInt(input.size),
            media: input.media,
            status: 'uploading',
            storageType: input.storageType ?? DEFAULT_STORAGE_TYPE,
            affinities: input.affinities ?? [],
            meta: input.meta ?? {},
            lockedByJob: jobId
        }
    });
}
function checkUploadSize(deps, size, point) {
    const max = uploadMax(deps);
    // refused before the body is read: the connection is closed after the answer, not drained
    if (size > max)
        throw new ApiError(413, 'validation', `The image is ${size} bytes; drives hold at most ${max} bytes`, point, { connection: 'close' });
    if (!Number.isSafeInteger(size) || size < 1)
        throw errors.validation('The image must hold at least 1 byte', point);
}
/** Removes an upload's drive (row and data) if the job still holds it: nothing half-made remains. */
export async function discardUpload(prisma, storage, ownerId, driveId, jobId) {
    const row = await prisma.drive.findUnique({ where: { id: driveId }, select: { lockedByJob: true } });
    if (row && row.lockedByJob !== jobId)
        return;
    await storage.delete(driveId);
    await prisma.$transaction(async (tx) => {
        await tx.transferLink.deleteMany({ where: { driveId } });
        await tx.drive.deleteMany({ where: { id: driveId, lockedByJob: jobId } });
        await announceDrives(tx, ownerId, [driveId]);
    });
}
/** The upload is complete: the drive leaves `uploading` (with its final size when given). */
export async function finishUploadedDrive(tx, ownerId, driveId, jobId, size) {
    const status = await restingStatusOf(tx, driveId);
    const done = await tx.drive.updateMany({
        where: { id: driveId, lockedByJob: jobId, status: 'uploading' },
        data: { status, lockedByJob: null, ...(size !== undefined ? { size: BigInt(size) } : {}) }
    });
    if (done.count === 0)
        throw errors.gone('The drive of this upload is gone');
    await tx.uploadChunk.deleteMany({ where: { driveId } });
    await tx.transferLink.deleteMany({ where: { driveId, purpose: 'upload_chunk' } });
    await announceDrives(tx, ownerId, [driveId]);
}
function streamFailure(err, what) {
    if (err instanceof ApiError)
        return err;
    if (err instanceof BodyTooLong)
        return errors.tooLarge(`The ${what} is larger than allowed: ${err.message}`);
    return errors.validation(`The ${what} was not received completely (the connection ended early)`);
}
// ---------------------------------------------------------------------------------------------
// Raw upload (§5.1): POST/PUT /drives/upload/[name] with Content-Length
export async function receiveRawUpload(deps, ownerId, input, size, body) {
    checkUploadSize(deps, size, 'Content-Length');
    const driveId = randomUUID();
    const jobId = randomUUID();
    await deps.storage.create(driveId, size);
    let row;
    try {
        row = await deps.prisma.$transaction(async (tx) => {
            await createUploadingDrive(tx, ownerId, driveId, jobId, { ...input, size });
            const job = await createHeldJob(tx, deps, {
                id: jobId,
                ownerId,
                operation: 'drive_upload',
                params: { driveId, size, mode: 'raw' },
                resources: [{ type: 'drives', id: driveId, mode: 'write' }],
                bytesTotal: size,
                description: `receiving a ${size} byte image`
            });
            await announceDrives(tx, ownerId, [driveId]);
            return job;
        });
    }
    catch (err) {
        await deps.storage.delete(driveId).catch(() => { });
        throw err;
    }
    const held = new HeldJob(deps, row, size);
    try {
        const meter = new Meter(size, true, (n) => held.progress(n));
        await pipeline(body, meter, await deps.storage.createWriteStream(driveId), { signal: held.signal });
        if (meter.bytes !== size)
            throw errors.validation(`The body held ${meter.bytes} of the ${size} bytes announced by Content-Length`, 'Content-Length');
        const sha256 = meter.digest();
        await deps.prisma.$transaction(async (tx) => {
            await finishUploadedDrive(tx, ownerId, driveId, jobId);
            await held.finish(tx, { state: 'success', result: { sha256, bytes: size } });
        });
        return { driveId, jobId, sha256, bytes: size };
    }
    catch (err) {
        const apiErr = held.cancelled ? errors.validation('The upload was cancelled') : streamFailure(err, 'body');
        body.resume(); // drain what the client still sends, so the error answer can be read
        await discardUpload(deps.prisma, deps.storage, ownerId, driveId, jobId).catch(e => deps.log.error({ err: e, drive: driveId }, 'could not discard a failed upload'));
        await held.fail(apiErr);
        throw apiErr;
    }
}
/** Creates the drive (uploading, size 0) and its held job, before the file part is read. */
export async function startMultipartUpload(deps, ownerId, input, sizeHint) {
    const driveId = randomUUID();
    const jobId = randomUUID();
    const max = uploadMax(deps);
    await deps.storage.create(driveId, 0);
    let row;
    try {
        row = await deps.prisma.$transaction(async (tx) => {
            await createUploadingDrive(tx, ownerId, driveId, jobId, { ...input, size: 0 });
            const job = await createHeldJob(tx, deps, {
                id: jobId,
                ownerId,
                operation: 'drive_upload',
                params: { driveId, mode: 'multipart' },
                resources: [{ type: 'drives', id: driveId, mode: 'write' }],
                ...(sizeHint ? { bytesTotal: sizeHint } : {}),
                description: 'receiving an image (multipart)'
            });
            await announceDrives(tx, ownerId, [driveId]);
            return job;
        });
    }
    catch (err) {
        await deps.storage.delete(driveId).catch(() => { });
        throw err;
    }
    const held = new HeldJob(deps, row, sizeHint ?? null);
    let received;
    const abort = async (err) => {
        const apiErr = held.cancelled ? errors.validation('The upload was cancelled') : streamFailure(err, 'file');
        await discardUpload(deps.prisma, deps.storage, ownerId, driveId, jobId).catch(e => deps.log.error({ err: e, drive: driveId }, 'could not discard a failed upload'));
        await held.fail(apiErr);
        return apiErr;
    };
    return {
        driveId,
        jobId,
        abort,
        receive: async (file, truncated) => {
            try {
                const meter = new Meter(max, true, (n) => held.progress(n, sizeHint !== undefined && n > sizeHint ? n : undefined));
                await pipeline(file, meter, growingWriteStream(deps.storage, driveId, max), { signal: held.signal });
                if (truncated())
                    throw errors.tooLarge(`The file is larger than the largest drive (${max} bytes)`, 'file');
                if (meter.bytes === 0)
                    throw errors.validation('The file is empty', 'file');
                received = { sha256: meter.digest(), bytes: meter.bytes };
            }
            catch (err) {
                file.resume();
                throw await abort(err);
            }
        },
        commit: async () => {
            if (!received)
                throw await abort(errors.validation('The form has no file', 'file'));
            const { sha256, bytes } = received;
            try {
                await deps.prisma.$transaction(async (tx) => {
                    await tx.job.update({ where: { id: jobId }, data: { bytesTotal: BigInt(bytes) } });
                    await finishUploadedDrive(tx, ownerId, driveId, jobId, bytes);
                    await held.finish(tx, { state: 'success', result: { sha256, bytes } });
                });
            }
            catch (err) {
                throw await abort(err);
            }
            return { driveId, jobId, sha256, bytes };
        }
    };
}
// ---------------------------------------------------------------------------------------------
// Chunked, resumable upload (§5.2)
/** POST /initupload/: a drive of exactly `size` bytes in `uploading`, and its parked job. */
export async function initUpload(deps, ownerId, input) {
    checkUploadSize(deps, input.size, 'size');
    const driveId = randomUUID();
    const jobId = randomUUID();
    await deps.storage.create(driveId, input.size);
    try {
        const row = await deps.prisma.$transaction(async (tx) => {
            await createUploadingDrive(tx, ownerId, driveId, jobId, input);
            await enqueueJob(tx, {
                id: jobId,
                ownerId,
                operation: 'drive_upload',
                params: { driveId, size: input.size, mode: 'chunked' },
                resources: [{ type: 'drives', id: driveId, mode: 'write' }],
                bytesTotal: input.size,
                description: `waiting for the chunks of a ${input.size} byte image`,
                runAt: idleDeadline()
            });
            // started at once, but with no lease: no worker claims it before its deadline or its last chunk
            await tx.job.update({ where: { id: jobId }, data: { state: 'started', startedAt: new Date() } });
            await announceDrives(tx, ownerId, [driveId]);
            return tx.drive.findUniqueOrThrow({ where: { id: driveId } });
        });
        return (await drivesToWire(deps.prisma, [row]))[0];
    }
    catch (err) {
        await deps.storage.delete(driveId).catch(() => { });
        throw err;
    }
}
function idleDeadline() {
    return new Date(Date.now() + CHUNKED_UPLOAD_IDLE_SECONDS * 1000);
}
/** The nominal chunk size of an upload, fixed by its first link (the geometry depends on it). */
async function fixChunkSize(tx, jobId, chunkSize) {
    await tx.$executeRawUnsafe(`
    UPDATE jobs SET params = params || jsonb_build_object('chunkSize', $2::bigint)
    WHERE id = $1::uuid AND NOT (params ? 'chunkSize')`, jobId, chunkSize);
    const job = await tx.job.findUniqueOrThrow({ where: { id: jobId }, select: { params: true } });
    return Number(job.params.chunkSize);
}
/** ?do=upload_chunk: a 5-minute link for one chunk, or 416 when the chunk is stored already. */
export async function chunkLink(deps, ownerId, driveId, chunkNumber, chunkSize) {
    return deps.prisma.$transaction(async (tx) => {
        const drive = await loadOwnedDrive(tx, ownerId, driveId, { lock: true });
        if (drive.status !== 'uploading' || !drive.lockedByJob)
            throw errors.wrongState(`Drive ${drive.id} is ${drive.status}, not uploading`);
        const jobId = drive.lockedByJob;
        const size = Number(drive.size);
        const fixed = await fixChunkSize(tx, jobId, chunkSize);
        if (fixed !== chunkSize)
            throw errors.validation(`This upload uses chunks of ${fixed} bytes; chunk_size must be ${fixed}`, 'chunk_size');
        if (!chunkRange(size, chunkSize, chunkNumber)) {
            throw errors.validation(`chunk_number must be between 0 and ${chunkCount(size, chunkSize) - 1} for ${size} bytes in chunks of ${chunkSize}`, 'chunk_number');
        }
        const stored = await tx.uploadChunk.findUnique({ where: { driveId_number: { driveId: drive.id, number: chunkNumber } } });
        if (stored)
            throw chunkStored(chunkNumber);
        const { token, hash } = newToken();
        await tx.transferLink.create({
            data: {
                tokenHash: hash,
                ownerId,
                driveId: drive.id,
                jobId,
                purpose: 'upload_chunk',
                chunkNumber,
                chunkSize: BigInt(chunkSize),
                expiresAt: new Date(Date.now() + deps.config.uploadLinkTtlSeconds * 1000)
            }
        });
        return { link: chunkLinkPath(token) };
    });
}
function chunkStored(n) {
    return errors.rangeNotSatisfiable(`Chunk ${n} already uploaded`, 'chunk_number');
}
// chunks being received by this process; a concurrent duplicate is refused before it writes
const inFlight = new Set();
/** POST <link>: writes the chunk at its offset, records it, and finishes the upload after the last one. */
export async function receiveChunk(deps, token, body, contentLength) {
    const link = await findLink(deps.prisma, token, 'upload_chunk');
    const n = link.chunkNumber ?? -1;
    const S = Number(link.chunkSize ?? 0);
    const drive = await deps.prisma.drive.findFirst({ where: { id: link.driveId, ownerId: link.ownerId, deleted: false } });
    if (!drive || drive.status !== 'uploading' || drive.lockedByJob !== link.jobId || !link.jobId) {
        throw errors.gone('The upload this link belongs to is over');
    }
    const jobId = link.jobId;
    const size = Number(drive.size);
    const range = chunkRange(size, S, n);
    if (contentLength !== undefined && contentLength !== range.length) {
        throw errors.validation(`Chunk ${n} holds ${range.length} bytes; the body announces ${contentLength}`, 'Content-Length');
    }
    const key = `${drive.id}:${n}`;
    if (inFlight.has(key))
        throw errors.rangeNotSatisfiable(`Chunk ${n} already uploaded (it is being received now)`, 'chunk_number');
    if (await deps.prisma.uploadChunk.findUnique({ where: { driveId_number: { driveId: drive.id, number: n } } }))
        throw chunkStored(n);
    inFlight.add(key);
    try {
        const meter = new Meter(range.length, false);
        try {
            await pipeline(body, meter, await deps.storage.createWriteStream(drive.id, { start: range.start }));
        }
        catch (err) {
            body.resume();
            throw streamFailure(err, `chunk ${n}`);
        }
        if (meter.bytes !== range.length) {
            throw errors.validation(`Chunk ${n} must hold ${range.length} bytes; ${meter.bytes} arrived`, 'Content-Length');
        }
        return await recordChunk(deps, drive, jobId, n, range.length, S);
    }
    finally {
        inFlight.delete(key);
    }
}
async function recordChunk(deps, drive, jobId, n, length, S) {
    const size = Number(drive.size);
    const total = chunkCount(size, S);
    return deps.prisma.$transaction(async (tx) => {
        // chunks of one upload are recorded one at a time: without this row lock, two last chunks
        // arriving together could each miss the other's row, so neither would see the upload complete
        await tx.$executeRawUnsafe('SELECT 1 FROM jobs WHERE id = $1::uuid FOR UPDATE', jobId);
        const inserted = await tx.$executeRawUnsafe('INSERT INTO upload_chunks (drive_id, number, size) VALUES ($1::uuid, $2, $3) ON CONFLICT DO NOTHING', drive.id, n, BigInt(length));
        if (inserted === 0)
            throw chunkStored(n);
        const [agg] = await tx.$queryRawUnsafe('SELECT count(*)::int AS count, COALESCE(sum(size), 0)::text AS bytes FROM upload_chunks WHERE drive_id = $1::uuid', drive.id);
        const bytes = Number(agg.bytes);
        const complete = agg.count >= total;
        const job = await tx.job.updateMany({
            where: { id: jobId, state: 'started', lockedBy: null },
            data: {
                bytesDone: BigInt(bytes),
                progress: percentOf(bytes, size) ?? 0,
                description: complete ? 'all chunks received; verifying the image' : `received ${agg.count} of ${total} chunks`,
                // the last chunk makes the job due now: a worker finishes the upload
                runAt: complete ? new Date() : idleDeadline(),
                lastModified: new Date()
            }
        });
        if (job.count === 0)
            throw errors.gone('The upload this link belongs to is over');
        if (complete)
            await tx.$executeRawUnsafe('SELECT pg_notify($1, $2)', CHANNELS.jobs, jobId);
        await publishChange(tx, { ownerId: drive.ownerId, resourceType: 'jobs', resourceId: jobId });
        return { chunk: n, bytes: length, chunksStored: agg.count, chunksTotal: total, complete };
    });
}
// ---------------------------------------------------------------------------------------------
// Downloads
const NOT_DOWNLOADABLE = ['creating', 'uploading', 'cloning_dst'];
export function assertDownloadable(drive) {
    if (NOT_DOWNLOADABLE.includes(drive.status))
        throw errors.wrongState(`Drive ${drive.id} cannot be downloaded while its status is ${drive.status}`);
    if (drive.storageType === 'local_nvme')
        throw errors.wrongState(`Drive ${drive.id} is ephemeral and cannot be downloaded`);
    assertDriveUsable(drive, 'download');
}
/**
 * The single byte range of a `Range` header for an image of `size` bytes: undefined means the
 * whole image (no header, or a form we do not serve partially, such as several ranges).
 */
export function parseRange(header, size) {
    if (!header)
        return undefined;
    const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
    if (!m || (m[1] === '' && m[2] === ''))
        return undefined;
    let start;
    let end;
    if (m[1] === '') {
        const suffix = Number(m[2]);
        if (suffix === 0)
            throw unsatisfiable(size);
        start = Math.max(0, size - suffix);
        end = size - 1;
    }
    else {
        start = Number(m[1]);
        end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
        if (m[2] !== '' && Number(m[2]) < start)
            return undefined; // invalid: ignored (RFC 9110)
    }
    if (start >= size || size === 0)
        throw unsatisfiable(size);
    return { start, end };
}
function unsatisfiable(size) {
    return new ApiError(416, 'validation', `The requested range is outside the image (${size} bytes)`, 'Range', { 'content-range': `bytes */${size}` });
}
/** A job for a plain authenticated download (GET /drives/{uuid}/download/), held by the request. */
export async function startDirectDownload(deps, ownerId, driveId, range) {
    return deps.prisma.$transaction(async (tx) => {
        const drive = await loadOwnedDrive(tx, ownerId, driveId);
        assertDownloadable(drive);
        const size = Number(drive.size);
        const r = range(size);
        const bytes = r ? r.end - r.start + 1 : size;
        const row = await createHeldJob(tx, deps, {
            ownerId,
            operation: 'drive_download',
            params: { driveId: drive.id, mode: 'direct', start: r?.start ?? 0, bytes },
            resources: [{ type: 'drives', id: drive.id, mode: 'read' }],
            bytesTotal: bytes,
            description: `sending ${bytes} bytes`
        });
        return { held: new HeldJob(deps, row, bytes), drive, range: r };
    });
}
/** ?do=download: a one-time link that must be started within DOWNLOAD_LINK_TTL, and its job. */
export async function createDownloadLink(deps, ownerId, driveId) {
    return deps.prisma.$transaction(async (tx) => {
        const drive = await loadOwnedDrive(tx, ownerId, driveId, { lock: true });
        assertDownloadable(drive);
        const expiresAt = new Date(Date.now() + deps.config.downloadLinkTtlSeconds * 1000);
        const { id: jobId } = await enqueueJob(tx, {
            ownerId,
            operation: 'drive_download',
            params: { driveId: drive.id, mode: 'link' },
            resources: [{ type: 'drives', id: drive.id, mode: 'read' }],
            bytesTotal: Number(drive.size),
            description: 'waiting for the download to start',
            // not started by then: a worker claims it and cancels it
            runAt: expiresAt,
            maxAttempts: 1
        });
        const { token, hash } = newToken();
        await tx.transferLink.create({ data: { tokenHash: hash, ownerId, driveId: drive.id, jobId, purpose: 'download', expiresAt } });
        return { job: ref('jobs', jobId), url: downloadLinkPath(token) };
    });
}
/** GET <download link>: uses the link up (a second use is 410) and takes its job's lease. */
export async function useDownloadLink(deps, token) {
    const link = await findLink(deps.prisma, token, 'download');
    return deps.prisma.$transaction(async (tx) => {
        const used = await tx.transferLink.updateMany({
            where: { tokenHash: link.tokenHash, usedAt: null, expiresAt: { gt: new Date() } },
            data: { usedAt: new Date() }
        });
        if (used.count === 0)
            throw errors.gone('This download link has been used already');
        const row = link.jobId ? await holdJob(tx, deps, link.jobId, 'queued') : undefined;
        if (!row)
            throw errors.gone('The download of this link was cancelled');
        const drive = await tx.drive.findFirst({ where: { id: link.driveId, ownerId: link.ownerId, deleted: false } });
        if (!drive)
            throw errors.gone('The drive of this link is gone');
        assertDownloadable(drive);
        return { held: new HeldJob(deps, row, Number(drive.size)), drive };
    });
}
/** Cancels a download job whose link was not used in time (called by its handler at the deadline). */
export async function cancelUnusedDownload(prisma, jobId) {
    return prisma.$transaction(async (tx) => {
        const unused = await tx.transferLink.updateMany({ where: { jobId, purpose: 'download', usedAt: null }, data: { usedAt: new Date() } });
        if (unused.count === 0)
            return false;
        await requestCancel(tx, [jobId]);
        return true;
    });
}
//# sourceMappingURL=transfers.js.map