/**
 * Storage of drive images.
 *
 * A drive image is a raw, sparse file holding exactly `size` bytes: byte N of the
 * image is byte N of the virtual disk. Holes read as zeros. Sizes and offsets are
 * plain `number`s of bytes: the largest drive (16 TiB = 2^44) is far below
 * Number.MAX_SAFE_INTEGER (2^53 - 1).
 *
 * Drive ids are lowercase UUIDs (`0f1e2d3c-...`). Every method validates the id
 * before touching the file system and throws a {@link StorageError} with code
 * `'INVALID_ID'` for anything else (uppercase, `../x`, `/etc/passwd`, ...).
 *
 * Errors:
 * - Conditions of the storage (missing drive, existing drive, bad id, aborted copy,
 *   I/O failure such as ENOSPC/EIO/EACCES) are reported as {@link StorageError}
 *   with a {@link StorageErrorCode}; the underlying Node error, if any, is `cause`.
 * - Programming errors in arguments (negative or non-integer sizes/offsets, a size
 *   above {@link MAX_DRIVE_SIZE}, a write outside the drive) throw `RangeError`.
 *
 * Concurrency: the storage does not lock drives against each other. Callers (the
 * job layer) must not resize/delete a drive while it is being copied or written, and
 * must not write a source drive while it is being copied (the copy would be a torn
 * snapshot). Two concurrent copies to the same destination are refused within one
 * process (`'EXISTS'`), never across processes.
 */
import type { Readable, Writable } from 'node:stream'

/** Largest drive size accepted: 16 TiB. */
export const MAX_DRIVE_SIZE = 16 * 1024 ** 4

/**
 * 'UNAVAILABLE': the storage cannot be reached now (e.g. the Ceph cluster does not answer);
 * the request may succeed later (HTTP 503, jobs are retried).
 */
export type StorageErrorCode = 'NOT_FOUND' | 'EXISTS' | 'INVALID_ID' | 'ABORTED' | 'IO' | 'UNAVAILABLE'

export class StorageError extends Error {
  readonly code: StorageErrorCode

  constructor (code: StorageErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    // An aborted operation looks like any other AbortError to generic code
    // (`err.name === 'AbortError'`) while staying an instance of StorageError.
    this.name = code === 'ABORTED' ? 'AbortError' : 'StorageError'
  }

  /** Whether trying again later may succeed (the job engine retries such failures). */
  get retryable (): boolean {
    return this.code === 'UNAVAILABLE'
  }
}

export function isStorageError (err: unknown, code?: StorageErrorCode): err is StorageError {
  return err instanceof StorageError && (code === undefined || err.code === code)
}

export interface DriveStat {
  /** Nominal size of the image in bytes (what the guest sees). */
  size: number
  /** Bytes actually allocated on disk: st_blocks * 512 (file system metadata included). */
  allocated: number
}

export interface ReadRange {
  /** First byte to read (default 0). */
  start?: number
  /** Last byte to read, INCLUSIVE, like `fs.createReadStream` (default: end of the image). */
  end?: number
}

export interface WriteStreamOptions {
  /** Offset of the first byte written (default 0). */
  start?: number
  /** Sees each batch of buffers once written (see {@link WrittenHook}). */
  written?: WrittenHook
}

/**
 * Called with each batch of buffers a write stream wrote, in order, before it writes the next
 * batch (a promise returned is awaited: backpressure). `released`: the storage holds none of them
 * any more, so the callee may take them (move them to a thread); false when they may still be
 * queued (rbd's pipe to its import process): the callee must not change or move them.
 */
export type WrittenHook = (bufs: Buffer[], released: boolean) => void | Promise<void>

/**
 * Progress of a copy: `bytesDone` of `bytesTotal`, where `bytesTotal` is the data to
 * copy (the source's allocated bytes), not its nominal size. Values never decrease,
 * `bytesDone <= bytesTotal`, and the last call of a successful copy is
 * `(bytesTotal, bytesTotal)`.
 */
export type CopyProgress = (bytesDone: number, bytesTotal: number) => void

export interface CopyOptions {
  /**
   * Size of the destination. If larger than the source, the copy is extended to
   * exactly `size` bytes (the extension is a hole). If smaller than or equal to the
   * source size it is ignored: a copy never drops data.
   */
  size?: number
  /** Aborts the copy; the promise then rejects with StorageError 'ABORTED' within a second. */
  signal?: AbortSignal
  /**
   * Called at the start (bytesDone = 0), a few times a second while copying, and once
   * at the end with (total, total). If it throws, the copy is stopped, cleaned up as if
   * aborted, and rejects with that exception.
   */
  onProgress?: CopyProgress
  /**
   * The attempt of the job that copies (its fencing token): the partial file is named by it
   * (`<image>.partial.<attempt>`, a file on local storage, an image on rbd), so two attempts of one job never write the same
   * partial file, and partials of earlier attempts are removed. Without it: one unnamed partial.
   */
  attempt?: number
  /**
   * Runs the final step that puts the finished copy in place (the rename). The job layer passes its
   * fenced guard (ctx.fenced): the rename then happens only while this attempt still owns the job, so
   * a stale attempt can never replace a newer one's copy. If it throws, nothing is replaced, the
   * partial is removed and copy() rejects with that error.
   */
  fenced?: (commit: () => Promise<void>) => Promise<void>
  /**
   * Asked last, right before the destination is replaced (inside `fenced`: local, before the
   * rename; rbd, before each process that removes the old image or renames the copy into place).
   * A refusal (its error as it is) removes the partial; it leaves the destination as it was,
   * except on rbd between its two steps (the old image removed, the copy not yet renamed): the
   * destination is then missing, which a refusal means is no longer this caller's to replace. The
   * job layer passes its guard (ctx.guard): `fenced`'s transaction holds the job row only while
   * its session lives, and a process held up inside it for longer than the database keeps an idle
   * transaction resumes into the rename after another process may have taken the job over.
   */
  guard?: StorageGuard
  /** Called once a copy succeeded: how it was made and where the time went (for the job log). */
  onStats?: (stats: CopyStats) => void
  /** Called when the copy starts (again when it falls back to another method): how it copies. */
  onMethod?: (method: string) => void
}

/** How a copy was made and how long its steps took (milliseconds). */
export interface CopyStats {
  /** e.g. `cp --sparse=auto --reflink=auto`, `node (4 KiB zero-skipping)`, `rbd clone + flatten` */
  method: string
  /** bytes of data the source held (allocated) */
  bytes: number
  /** moving the data */
  copyMs: number
  /** making it durable (fsync of the file, or none when the backend syncs as it writes) */
  fsyncMs: number
  /** rename into place (and directory fsync) */
  renameMs: number
}

export interface CowCloneOptions {
  /** Size of the clone when larger than the source (as for copy). */
  size?: number
}

export interface FlattenOptions {
  /** Stops the flatten; the clone stays a valid copy-on-write child. Rejects 'ABORTED'. */
  signal?: AbortSignal
  /** Progress in bytes of the image (0 first, (total, total) last). */
  onProgress?: CopyProgress
}

/** Positional reads of an image into the caller's buffers (downloads that reuse their buffers). */
export interface DriveReader {
  /** Size of the image when it was opened. */
  readonly size: number
  /**
   * Reads up to `length` bytes at `position` into `into` from its start; resolves to the number
   * read (0 at the end of the image). `into` is the caller's again when the promise resolves.
   */
  read (into: Uint8Array, length: number, position: number): Promise<number>
  /** Closes the image. Idempotent. */
  close (): Promise<void>
}

/** Positional writer for chunked uploads (e.g. `Content-Range` PUTs). */
export interface DriveWriter {
  /** Nominal size of the drive when it was opened: writes must stay below it. */
  readonly size: number
  /**
   * Writes all of `data` at `position`. Never truncates and never extends the image:
   * throws RangeError if `position + data.length > size`. Safe to call concurrently
   * for disjoint ranges.
   */
  write (data: Uint8Array, position: number): Promise<void>
  /**
   * Writes `buffers` one after another from `position`, as `write` of their concatenation would,
   * without concatenating them (one gathering system call where the storage has one). Optional:
   * callers fall back to `write`.
   */
  writev? (buffers: Uint8Array[], position: number): Promise<void>
  /**
   * True when the buffers of a write or writev are no longer referenced once its promise resolves
   * (a local file: the system call is done); false or absent when they may still be queued.
   */
  readonly releasesBuffers?: boolean
  /** Flushes written data to stable storage (fsync). */
  sync (): Promise<void>
  /** Closes the file (after a sync if the storage is durable). Idempotent. */
  close (): Promise<void>
}

/**
 * How drive images sit on storage hosts, for `GET /drives/availability_groups/`:
 * - 'one-host': all drives fail together when one host (or one disk) does: local files under one
 *   root, or a Ceph pool whose copies do not sit on different hosts (a pool of size 1, a CRUSH
 *   rule whose failure domain is the OSD, or a cluster of one host), where every image is striped
 *   over the same disks;
 * - 'spread': every image is striped over the whole cluster with its replicas on other hosts
 *   (Ceph RBD with a host, or wider, failure domain over two hosts or more), so no host holds a
 *   drive alone and no two drives share one more than any other.
 */
export type DrivePlacement = 'one-host' | 'spread'

/**
 * The caller's last word before a step that cannot be undone (a job attempt's ctx.guard): runs
 * synchronously, immediately before the step, and throws (its own error, passed on as it is) when
 * the step must not happen. A storage cannot itself know whether the job attempt calling it was
 * taken over while it was held up; this check sits as close to the step as the storage can put it
 * (local: a truncate that grows, the image's rename out of its place or the copy's rename, each
 * made synchronously right after it, so not queued behind other work on Node's thread pool; a
 * shrink, which frees blocks, is still queued there; rbd: just before the process that does it
 * starts).
 */
export type StorageGuard = () => void

export interface DriveStorage {
  /** Where images live, as far as host failures go (see {@link DrivePlacement}); may ask the cluster. */
  placement (): Promise<DrivePlacement>

  /**
   * Creates a new sparse image of exactly `size` bytes. Allocates no data blocks.
   * Not idempotent: throws 'EXISTS' if the drive exists (it is left untouched).
   * Throws RangeError if `size` is not an integer in [0, MAX_DRIVE_SIZE].
   */
  create (id: string, size: number): Promise<void>

  /**
   * Sets the size to exactly `size` bytes. Growing adds a hole (allocates nothing);
   * shrinking discards the data past `size`. Idempotent (same size = no-op).
   * Throws 'NOT_FOUND' if the drive does not exist (it is never created here).
   * Aborting `signal` stops a resize that takes time (rbd: a shrink deletes objects) with
   * 'ABORTED'; the image may then be at either size, and the same call can simply run again.
   * An abort or a refusing `guard` before the size changes leaves it as it was.
   */
  resize (id: string, size: number, signal?: AbortSignal, guard?: StorageGuard): Promise<void>

  /**
   * Ends whatever the storage still has running (rbd: its processes) and refuses new calls
   * ('UNAVAILABLE'). For a stopping service, after its jobs were handed back. Optional: local
   * files need nothing.
   */
  close? (): Promise<void>

  /** `{ size, allocated }` of the image. Throws 'NOT_FOUND' if missing. */
  stat (id: string): Promise<DriveStat>

  /** Whether the image exists. Throws only 'INVALID_ID' (and 'IO' on I/O errors). */
  exists (id: string): Promise<boolean>

  /**
   * Opens the image and resolves to a stream of bytes `start..end` (end inclusive),
   * clamped to the end of the image. The file is opened before the promise resolves,
   * so 'NOT_FOUND' is thrown here, not emitted later by the stream.
   */
  createReadStream (id: string, range?: ReadRange): Promise<Readable>

  /**
   * Opens the image for positional reads into the caller's buffers ('NOT_FOUND' thrown here).
   * Optional: where the storage has it (local files), a download reads into buffers it reuses
   * instead of a stream's fresh buffer per read; elsewhere it streams (createReadStream).
   */
  openForRead? (id: string): Promise<DriveReader>

  /**
   * Opens the image and resolves to a stream that writes at `start`, `start + n`, ...
   * Never truncates; writing past the drive's size fails the stream with RangeError
   * (a drive only changes size through resize). 'NOT_FOUND' is thrown here. When the
   * stream finishes, data is fsynced (durable storage) before 'finish' is emitted.
   */
  createWriteStream (id: string, options?: WriteStreamOptions): Promise<Writable>

  /** Opens the image for positional writes (see {@link DriveWriter}). Throws 'NOT_FOUND'. */
  openForWrite (id: string): Promise<DriveWriter>

  /**
   * Makes `dstId` a byte-identical copy of `srcId`, extended to `options.size` if that
   * is larger. The copy stays sparse (holes are not written; all-zero blocks may become
   * holes). Data goes to a temporary file that is renamed over `dstId` only once
   * complete, so `dstId` is either absent/unchanged or a full copy: an existing `dstId`
   * is REPLACED, and a partial file left by an earlier interrupted attempt is discarded,
   * so a failed or interrupted copy can simply be run again.
   *
   * Throws 'NOT_FOUND' (source missing), 'INVALID_ID' (bad id, or src = dst),
   * 'EXISTS' (a copy to dstId with the same attempt, or another without one, is already running
   * in this process; a newer attempt's copy runs beside a stale one's, each to its own partial), 'ABORTED'
   * (signal aborted; the partial file is removed before rejecting), 'IO'.
   */
  copy (srcId: string, dstId: string, options?: CopyOptions): Promise<void>

  /**
   * Removes the image (and any partial copy of it). Idempotent: a missing drive is fine.
   * `guard` runs before the image itself goes (rbd: before each step that makes it go).
   */
  delete (id: string, guard?: StorageGuard): Promise<void>

  /** Where the image lives, for internal use (a file path, or `rbd:<pool>/<id>`). */
  path (id: string): string

  /**
   * Optional, backends with copy-on-write clones only: makes `dstId` a child of a snapshot of
   * `srcId` in well under a second whatever the size; readable and writable at once, independent
   * of later writes to the source. A rerun on the same pair is a no-op; another existing `dstId`
   * is 'EXISTS'. Deleting the source later is allowed (its data lives until the child goes).
   */
  cloneCow? (srcId: string, dstId: string, options?: CowCloneOptions): Promise<void>

  /**
   * Optional, with cloneCow: detaches a clone from its source by copying the shared data, with
   * progress; a no-op for an image that is not a clone. Abort leaves a valid clone.
   */
  flatten? (id: string, options?: FlattenOptions): Promise<void>
}
