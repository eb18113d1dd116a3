/**
 * DriveStorage on a local file system: one sparse raw file per drive at
 * `<root>/<first two hex chars of the id>/<id>.img`.
 *
 * Copies run `cp --sparse=auto --reflink=auto` (GNU coreutils skips holes with
 * SEEK_DATA/SEEK_HOLE and copies data in the kernel with copy_file_range / reflinks, so the
 * time grows with the data, not the nominal size) and fall back to a pure-Node copy that reads in large
 * chunks and skips writing all-zero blocks (so the copy stays sparse) when `cp` is
 * missing or does not know those options (macOS, busybox).
 */
import { spawn } from 'node:child_process'
import { constants as fsConstants, createReadStream as fsCreateReadStream, ftruncateSync, renameSync } from 'node:fs'
import { mkdir, open, readdir, rm, stat as fsStat } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import path from 'node:path'
import type { Readable, Writable } from 'node:stream'
import { gatheringWritable } from './gather.ts'
import { SETPRIV_EXEC_FAILED, dyingWithParent } from './parent-death.ts'
import { Progress, ProgressCallbackError } from './progress.ts'
import {
  MAX_DRIVE_SIZE,
  StorageError,
} from './types.ts'
import type {
  CopyOptions,
  DrivePlacement,
  DriveReader,
  DriveStat,
  DriveStorage,
  DriveWriter,
  ReadRange,
  StorageGuard,
  WriteStreamOptions,
} from './types.ts'

/** Lowercase UUID, any version/variant. Anything else never reaches `path.join`. */
const ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

const MiB = 1024 * 1024
/** Granularity of the zero-block detection of the Node copy (file system block). */
const SPARSE_BLOCK = 4096

export type CopyMethod = 'auto' | 'cp' | 'node'

export interface LocalDriveStorageOptions {
  /** Folder holding the images; created on first use. */
  root: string
  /**
   * 'auto' (default): `cp`, falling back to the Node copy when `cp` is missing or
   * rejects its options. 'cp': `cp` only (an unusable `cp` is an 'IO' error).
   * 'node': the Node copy only.
   */
  copyMethod?: CopyMethod
  /** The `cp` executable (default 'cp', looked up in PATH). */
  cpCommand?: string
  /**
   * `cp --sparse=` mode. 'auto' (default): holes of the source stay holes, data is copied in
   * the kernel with copy_file_range (allocated zeros stay allocated, as in the source); on a
   * 2 GiB dense image it ran at plain `cp` speed, where 'always' took twice as long.
   * 'always': cp reads the data and also turns runs of zeros into holes (128 KiB blocks).
   */
  cpSparse?: 'always' | 'auto'
  /**
   * fsync data before a copy is renamed into place, after create/resize and when a write
   * stream/writer is closed, and fsync the directory after renames. Default true: a copy
   * that resolved survives a power cut. false trades that for speed (tests, benchmarks).
   */
  durable?: boolean
  /** How often copy progress is reported / polled, ms (default 200). */
  progressIntervalMs?: number
  /** Chunk size of the Node copy, bytes (default 4 MiB; a multiple of 4096). */
  chunkSize?: number
}

function assertSize (size: number, what = 'size'): void {
  if (!Number.isSafeInteger(size) || size < 0 || size > MAX_DRIVE_SIZE) {
    throw new RangeError(`${what} must be an integer between 0 and ${MAX_DRIVE_SIZE}, got ${String(size)}`)
  }
}

function errno (err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined
}

/** Maps a Node fs error to a StorageError (StorageErrors and RangeErrors pass through). */
function wrap (err: unknown, id: string, op: string): Error {
  if (err instanceof StorageError || err instanceof RangeError) return err
  switch (errno(err)) {
    case 'ENOENT': return new StorageError('NOT_FOUND', `drive ${id} not found`, { cause: err })
    case 'EEXIST': return new StorageError('EXISTS', `drive ${id} already exists`, { cause: err })
    default: return new StorageError('IO', `${op} ${id}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
  }
}

function abortedError (id: string, reason?: unknown): StorageError {
  return new StorageError('ABORTED', `copy to ${id} aborted`, { cause: reason })
}

/** A function, so TypeScript does not narrow `signal.aborted` across awaits. */
function isAborted (signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true
}

/** Resolves/rejects like `p`, or rejects with ABORTED as soon as `signal` aborts. */
function untilAborted<T> (p: Promise<T>, signal: AbortSignal | undefined, id: string): Promise<T> {
  if (signal === undefined) return p
  if (signal.aborted) return Promise.reject(abortedError(id, signal.reason))
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortedError(id, signal.reason))
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort))
  })
}

async function rmForce (file: string): Promise<void> {
  await rm(file, { force: true })
}

interface CopyJob {
  srcId: string
  src: string
  partial: string
  srcSize: number
  dstId: string
  progress: Progress
  signal: AbortSignal | undefined
  onMethod: ((method: string) => void) | undefined
}

/**
 * A durable writer flushes in the background each time this many bytes were written since its last
 * flush ended (one flush at a time). Small, so the fsync that ends a write (a chunk's, an upload's)
 * has little left: writing 4 chunks of 64 MiB here, their fsyncs took 43 ms at 32 MiB, 20 at 8 MiB,
 * 5-7 at 4 MiB (and the writes no longer), 8-20 at 1 MiB (a flush per write).
 */
const WRITE_BACK_BYTES = 4 * 1024 * 1024

class LocalDriveReader implements DriveReader {
  private closed: Promise<void> | undefined
  constructor (private readonly handle: FileHandle, readonly size: number, private readonly id: string) {}

  async read (into: Uint8Array, length: number, position: number): Promise<number> {
    try {
      return (await this.handle.read(into, 0, Math.min(length, into.byteLength), position)).bytesRead
    } catch (err) {
      throw wrap(err, this.id, 'read')
    }
  }

  async close (): Promise<void> {
    this.closed ??= this.handle.close().catch(() => {})
    await this.closed
  }
}

class LocalDriveWriter implements DriveWriter {
  /** a write's system call is done when it resolves: the buffers are the caller's again */
  readonly releasesBuffers = true
  private closed: Promise<void> | undefined
  /** bytes written since the last background flush started, and that flush while it runs */
  private unflushed = 0
  private flushing: Promise<void> | undefined
  /**
   * What a background flush failed with. Linux reports a failed write-back once per open file:
   * the fsync of close() on this same handle would then answer success for the pages that were
   * lost (measured on an ext4 whose device ran out of space: the first fdatasync ENOSPC, the next
   * ones ok). So it is kept, and every later write, sync and close fails with it.
   */
  private flushError: unknown
  constructor (
    private readonly handle: FileHandle,
    readonly size: number,
    private readonly durable: boolean,
    private readonly id: string
  ) {}

  async write (data: Uint8Array, position: number): Promise<void> {
    if (!Number.isSafeInteger(position) || position < 0 || position + data.length > this.size) {
      throw new RangeError(`write of ${data.length} bytes at ${String(position)} is outside drive ${this.id} (size ${this.size})`)
    }
    this.throwIfFlushFailed()
    let off = 0
    try {
      while (off < data.length) {
        const { bytesWritten } = await this.handle.write(data, off, data.length - off, position + off)
        off += bytesWritten
      }
    } catch (err) {
      throw wrap(err, this.id, 'write')
    }
    this.wrote(data.length)
  }

  /**
   * Durable writers start writing back what they wrote while more arrives (fdatasync in the thread
   * pool, one at a time): the fsync of close() then has only the tail left instead of the whole
   * image, which the page cache would otherwise hold dirty until then.
   */
  private wrote (n: number): void {
    if (!this.durable) return
    this.unflushed += n
    if (this.unflushed < WRITE_BACK_BYTES || this.flushing !== undefined || this.closed !== undefined) return
    this.unflushed = 0
    this.flushing = this.handle.datasync().catch((err: unknown) => { this.flushError ??= err }).finally(() => { this.flushing = undefined })
  }

  private throwIfFlushFailed (): void {
    if (this.flushError !== undefined) throw wrap(this.flushError, this.id, 'write back')
  }

  async writev (buffers: Uint8Array[], position: number): Promise<void> {
    const len = buffers.reduce((n, b) => n + b.length, 0)
    if (!Number.isSafeInteger(position) || position < 0 || position + len > this.size) {
      throw new RangeError(`write of ${len} bytes at ${String(position)} is outside drive ${this.id} (size ${this.size})`)
    }
    this.throwIfFlushFailed()
    try {
      const { bytesWritten } = await this.handle.writev(buffers, position)
      if (bytesWritten === len) {
        this.wrote(len)
        return
      }
    } catch (err) {
      throw wrap(err, this.id, 'write')
    }
    // Short writev (rare): redo with plain writes, which loop until done.
    await this.write(Buffer.concat(buffers), position)
  }

  async sync (): Promise<void> {
    await this.flushing
    this.throwIfFlushFailed()
    try {
      await this.handle.sync()
    } catch (err) {
      throw wrap(err, this.id, 'sync')
    }
  }

  close (): Promise<void> {
    this.closed ??= (async () => {
      // a background flush still running: the handle stays open until it is done
      await this.flushing
      try {
        this.throwIfFlushFailed()
        if (this.durable) await this.handle.sync()
      } catch (err) {
        await this.handle.close().catch(() => {})
        throw wrap(err, this.id, 'sync')
      }
      try {
        await this.handle.close()
      } catch (err) {
        throw wrap(err, this.id, 'close')
      }
    })()
    return this.closed
  }

  /** Closes without sync, ignoring errors (stream destroyed). */
  async abandon (): Promise<void> {
    this.closed ??= (this.flushing ?? Promise.resolve()).then(() => this.handle.close()).catch(() => {})
    await this.closed.catch(() => {})
  }
}

export class LocalDriveStorage implements DriveStorage {
  /** One root on one machine: every image shares its host. */
  async placement (): Promise<DrivePlacement> {
    return 'one-host'
  }

  readonly root: string
  private readonly copyMethod: CopyMethod
  private readonly cpCommand: string
  private readonly cpSparse: 'always' | 'auto'
  private readonly durable: boolean
  private readonly progressIntervalMs: number
  private readonly chunkSize: number
  /** Set once `cp` turned out unusable, so later copies go straight to the fallback. */
  private cpUnusable = false
  private readonly copying = new Set<string>()

  constructor (options: LocalDriveStorageOptions) {
    if (typeof options?.root !== 'string' || options.root === '') throw new TypeError('root is required')
    this.root = path.resolve(options.root)
    this.copyMethod = options.copyMethod ?? 'auto'
    this.cpCommand = options.cpCommand ?? 'cp'
    this.cpSparse = options.cpSparse ?? 'auto'
    this.durable = options.durable ?? true
    this.progressIntervalMs = options.progressIntervalMs ?? 200
    this.chunkSize = options.chunkSize ?? 4 * MiB
    if (!Number.isSafeInteger(this.chunkSize) || this.chunkSize < SPARSE_BLOCK || this.chunkSize % SPARSE_BLOCK !== 0) {
      throw new RangeError(`chunkSize must be a positive multiple of ${SPARSE_BLOCK}`)
    }
  }

  path (id: string): string {
    if (typeof id !== 'string' || !ID_RE.test(id)) {
      throw new StorageError('INVALID_ID', `invalid drive id ${JSON.stringify(String(id)).slice(0, 80)}`)
    }
    const file = path.resolve(this.root, id.slice(0, 2), `${id}.img`)
    // Defence in depth: the regex already makes escaping impossible.
    if (!file.startsWith(this.root + path.sep)) {
      throw new StorageError('INVALID_ID', `drive id ${id} resolves outside the storage root`)
    }
    return file
  }

  /** The partial file of a copy to `id`: one per attempt of the copying job, so attempts never share one. */
  private partialPath (id: string, attempt?: number): string {
    return attempt === undefined ? `${this.path(id)}.partial` : `${this.path(id)}.partial.${attempt}`
  }

  /** mkdir -p of the id's shard folder (and the root). A few syscalls: not cached, so a
   *  folder removed behind our back is simply made again. */
  private async ensureDir (id: string): Promise<void> {
    try {
      await mkdir(path.dirname(this.path(id)), { recursive: true })
    } catch (err) {
      throw wrap(err, id, 'mkdir')
    }
  }

  private async syncDir (file: string): Promise<void> {
    if (!this.durable) return
    let h: FileHandle | undefined
    try {
      h = await open(path.dirname(file), fsConstants.O_RDONLY | fsConstants.O_DIRECTORY)
      await h.sync()
    } catch (err) {
      // Some file systems refuse fsync on directories (EINVAL): nothing more to do there.
      if (errno(err) !== 'EINVAL' && errno(err) !== 'EBADF') throw err
    } finally {
      await h?.close()
    }
  }

  async create (id: string, size: number): Promise<void> {
    const file = this.path(id)
    assertSize(size)
    await this.ensureDir(id)
    let h: FileHandle
    try {
      h = await open(file, 'wx', 0o600)
    } catch (err) {
      throw wrap(err, id, 'create')
    }
    try {
      await h.truncate(size)
      if (this.durable) await h.sync()
      await h.close()
      await this.syncDir(file)
    } catch (err) {
      await h.close().catch(() => {})
      await rmForce(file).catch(() => {})
      throw wrap(err, id, 'create')
    }
  }

  async resize (id: string, size: number, signal?: AbortSignal, guard?: StorageGuard): Promise<void> {
    const file = this.path(id)
    assertSize(size)
    let h: FileHandle
    try {
      // r+ : never creates the file.
      h = await open(file, 'r+')
    } catch (err) {
      throw wrap(err, id, 'resize')
    }
    let from: number
    try {
      // the image's size now (its job holds the drive: nothing else changes it before the truncate)
      from = (await h.stat().catch((err: unknown) => { throw wrap(err, id, 'resize') })).size
      // the last checks before the size changes (a shrink discards data), with no wait between
      // them and the truncate: a refusal (the guard's error as it is) leaves the image as it was
      if (isAborted(signal)) throw new StorageError('ABORTED', `resize of ${id} aborted`, { cause: signal?.reason })
      guard?.()
    } catch (err) {
      await h.close().catch(() => {})
      throw err
    }
    try {
      // growing is one metadata step, made synchronously right after the checks: not queued for a
      // thread of Node's pool, which other copies' fsyncs may hold past the lease the guard just
      // checked. A shrink frees the blocks past the new end, which takes time on the event loop's
      // thread (8 GiB of data: 1.6 s on ext4, measured once), so it stays on the pool, where a busy pool can still
      // hold it up past the check
      if (size >= from) ftruncateSync(h.fd, size)
      else await h.truncate(size)
      if (this.durable) await h.sync()
    } catch (err) {
      throw wrap(err, id, 'resize')
    } finally {
      await h.close().catch(() => {})
    }
  }

  async stat (id: string): Promise<DriveStat> {
    const file = this.path(id)
    try {
      const st = await fsStat(file)
      return { size: st.size, allocated: st.blocks * 512 }
    } catch (err) {
      throw wrap(err, id, 'stat')
    }
  }

  async exists (id: string): Promise<boolean> {
    try {
      await this.stat(id)
      return true
    } catch (err) {
      if (err instanceof StorageError && err.code === 'NOT_FOUND') return false
      throw err
    }
  }

  async createReadStream (id: string, range: ReadRange = {}): Promise<Readable> {
    const file = this.path(id)
    const start = range.start ?? 0
    assertSize(start, 'start')
    if (range.end !== undefined) {
      assertSize(range.end, 'end')
      if (range.end < start) throw new RangeError(`end (${range.end}) is before start (${start})`)
    }
    let h: FileHandle
    try {
      h = await open(file, 'r')
    } catch (err) {
      throw wrap(err, id, 'open')
    }
    return fsCreateReadStream('', {
      fd: h,
      start,
      end: range.end ?? Infinity,
      // 1 MiB reads: a slow client's download costs the service about four reads' worth of RSS
      // (a one-off probe, not in bench/: 20 downloads of `npm start`'s service, each `curl
      // --limit-rate 2M`, its VmRSS after 3-9 s: +86 MiB). 4 MiB reads, as bench:transfer's bare
      // stream makes, were tried (2026-12-05) and not kept: in bench:transfer the download went
      // 0.89x -> 0.92x the bare stream loaded, 0.93x -> 1.05x quiet (medians of the runs), but in
      // that probe the 20 downloads grew the RSS by 280 MiB (169 MiB with 2 MiB reads)
      highWaterMark: MiB,
      autoClose: true,
    })
  }

  /** The image opened with `flags`, and its size; 'NOT_FOUND' (or 'IO') thrown here, nothing left open. */
  private async openImage (id: string, flags: 'r' | 'r+'): Promise<{ h: FileHandle, size: number }> {
    let h: FileHandle
    try {
      h = await open(this.path(id), flags)
    } catch (err) {
      throw wrap(err, id, 'open')
    }
    try {
      return { h, size: (await h.stat()).size }
    } catch (err) {
      await h.close().catch(() => {})
      throw wrap(err, id, 'open')
    }
  }

  async openForRead (id: string): Promise<DriveReader> {
    const { h, size } = await this.openImage(id, 'r')
    return new LocalDriveReader(h, size, id)
  }

  async openForWrite (id: string): Promise<LocalDriveWriter> {
    const { h, size } = await this.openImage(id, 'r+')
    return new LocalDriveWriter(h, size, this.durable, id)
  }

  async createWriteStream (id: string, options: WriteStreamOptions = {}): Promise<Writable> {
    const start = options.start ?? 0
    assertSize(start, 'start')
    const writer = await this.openForWrite(id)
    if (start > writer.size) {
      await writer.abandon()
      throw new RangeError(`start ${start} is past the end of drive ${id} (size ${writer.size})`)
    }
    let pos = start
    return gatheringWritable({
      writeMany: async (bufs, len) => {
        await writer.writev(bufs, pos)
        pos += len
      },
      releasesBuffers: writer.releasesBuffers,
      written: options.written,
      final: () => writer.close(),
      abandon: () => writer.abandon()
    })
  }

  async delete (id: string, guard?: StorageGuard): Promise<void> {
    const file = this.path(id)
    const aside = `${file}.removing`
    // the last check before the image goes (its error as it is): nothing removed then
    guard?.()
    try {
      // out of its place synchronously, right after the guard (an asynchronous step would wait for
      // a thread of Node's pool, past the lease the guard just checked); its data is freed after,
      // off the event loop. A `.removing` file left by a delete that stopped goes with the next one.
      try {
        renameSync(file, aside)
      } catch (err) {
        if (errno(err) !== 'ENOENT') throw err
      }
      await rmForce(aside)
      await this.removePartials(id)
    } catch (err) {
      throw wrap(err, id, 'delete')
    }
  }

  /** Removes the partial files of copies to `id`: every attempt's, or those of attempts before `before`. */
  private async removePartials (id: string, before?: number): Promise<void> {
    const file = this.path(id)
    const prefix = `${path.basename(file)}.partial`
    let names: string[]
    try {
      names = await readdir(path.dirname(file))
    } catch (err) {
      if (errno(err) === 'ENOENT') return
      throw err
    }
    for (const name of names) {
      if (!name.startsWith(prefix)) continue
      const rest = name.slice(prefix.length)
      // never a newer attempt's: a stale attempt starting late must not delete the live copy
      const older = rest === '' || (/^\.\d+$/.test(rest) && (before === undefined || Number(rest.slice(1)) < before))
      if (older) await rmForce(path.join(path.dirname(file), name))
    }
  }

  async copy (srcId: string, dstId: string, options: CopyOptions = {}): Promise<void> {
    const src = this.path(srcId)
    const dst = this.path(dstId)
    if (srcId === dstId) throw new StorageError('INVALID_ID', `cannot copy drive ${srcId} onto itself`)
    if (options.size !== undefined) assertSize(options.size)
    const { signal } = options
    if (signal?.aborted === true) throw abortedError(dstId, signal.reason)
    const { attempt } = options
    if (attempt !== undefined && (!Number.isSafeInteger(attempt) || attempt < 1)) throw new RangeError(`attempt must be a positive integer, got ${attempt}`)
    const partial = this.partialPath(dstId, attempt)
    // one copy per partial file: a newer attempt (a takeover in this same process) has its own
    if (this.copying.has(partial)) throw new StorageError('EXISTS', `a copy to drive ${dstId} is already running`)
    this.copying.add(partial)
    try {
      let srcSize: number
      let total: number
      try {
        const st = await fsStat(src)
        srcSize = st.size
        // the data to copy: st_blocks also counts the file system's own blocks (an extent tree's,
        // the tail of a last partial block), which would make "bytes copied" exceed the drive
        total = Math.min(st.blocks * 512, st.size)
      } catch (err) {
        throw wrap(err, srcId, 'stat')
      }
      await this.ensureDir(dstId)
      // Partial files of earlier attempts (crash, kill -9, a stale attempt still copying in another
      // process) are simply discarded; a newer attempt's is left alone.
      await rmForce(partial)
      await this.removePartials(dstId, attempt ?? 0)
      const progress = new Progress(total, options.onProgress, this.progressIntervalMs)
      const job: CopyJob = { srcId, src, partial, srcSize, dstId, progress, signal, onMethod: options.onMethod }
      try {
        progress.report(0, true)
        const t0 = performance.now()
        const method = await this.copyData(job)
        const t1 = performance.now()
        if (isAborted(signal)) throw abortedError(dstId, signal?.reason)
        const finalSize = Math.max(srcSize, options.size ?? 0)
        const h = await open(partial, 'r+')
        let closing: Promise<void> | undefined
        try {
          const st = await h.stat()
          if (st.size !== finalSize) await h.truncate(finalSize)
          if (this.durable) {
            // fsync of a large copy can take seconds and cannot be interrupted: on abort,
            // stop waiting (the file is unlinked below; the fsync finishes on its own).
            const sync = h.sync()
            closing = sync.then(() => h.close(), () => h.close()).catch(() => {})
            await untilAborted(sync, signal, dstId)
          }
        } finally {
          if (closing === undefined) await h.close()
        }
        await closing
        const t2 = performance.now()
        if (isAborted(signal)) throw abortedError(dstId, signal?.reason)
        progress.report(total, true)
        let commitError: unknown
        const commit = async (): Promise<void> => {
          // the caller's last word, right before the rename: its refusal passes on as it is
          try {
            options.guard?.()
          } catch (err) {
            throw new ProgressCallbackError(err, 'the guard refused the rename')
          }
          try {
            // synchronous, right after the guard: an asynchronous rename waits for a thread of
            // Node's pool, which other copies' fsyncs may hold for seconds, past the lease the
            // guard just checked (a rename is one metadata step: it does not hold up the loop)
            renameSync(partial, dst)
            await this.syncDir(dst)
          } catch (err) {
            commitError = err
            throw err
          }
        }
        if (options.fenced === undefined) await commit()
        else {
          // fenced: renamed only while the copying attempt still owns its job; the guard's own
          // refusal (a stale attempt) reaches the caller as it is
          try {
            await options.fenced(commit)
          } catch (err) {
            if (err === commitError || err instanceof ProgressCallbackError) throw err
            throw new ProgressCallbackError(err, 'the fenced guard refused the rename')
          }
        }
        options.onStats?.({ method, bytes: total, copyMs: t1 - t0, fsyncMs: this.durable ? t2 - t1 : 0, renameMs: performance.now() - t2 })
      } catch (err) {
        await rmForce(partial).catch(() => {})
        if (err instanceof ProgressCallbackError) throw err.inner
        throw wrap(err, dstId, 'copy')
      }
    } finally {
      this.copying.delete(partial)
    }
  }

  /** Copies the data; returns how (for the job log). */
  private async copyData (job: CopyJob): Promise<string> {
    const node = 'node (zero blocks skipped)'
    if (this.copyMethod === 'node' || (this.copyMethod === 'auto' && this.cpUnusable)) {
      job.onMethod?.(node)
      await this.nodeCopy(job)
      return node
    }
    const cp = `${this.cpCommand} --sparse=${this.cpSparse} --reflink=auto`
    job.onMethod?.(cp)
    const result = await this.cpCopy(job)
    if (result === 'ok') return cp
    if (this.copyMethod === 'cp') {
      throw new StorageError('IO', `copy to ${job.dstId}: ${this.cpCommand} is not usable (${result.reason})`)
    }
    this.cpUnusable = true
    await rmForce(job.partial)
    job.onMethod?.(node)
    await this.nodeCopy(job)
    return node
  }

  /**
   * `cp --sparse=always|auto --reflink=auto -T -- src partial` in a child process. Progress
   * comes from polling the partial file's allocated blocks. Resolves 'ok', or
   * `{ reason }` when cp cannot be used here (missing, unknown options); throws on
   * abort and on real copy failures.
   */
  private cpCopy (job: CopyJob): Promise<'ok' | { reason: string }> {
    const { src, partial, progress, signal } = job
    return new Promise((resolve, reject) => {
      let stderr = ''
      let failure: unknown
      let spawnError: unknown
      let polling = false
      // cp dies with the service (a SIGKILLed service's cp would go on writing its partial file
      // while the process taking the job over starts its own attempt)
      const argv = dyingWithParent([this.cpCommand, `--sparse=${this.cpSparse}`, '--reflink=auto', '-T', '--', src, partial], 'KILL')
      const child = spawn(argv[0], argv.slice(1), {
        stdio: ['ignore', 'ignore', 'pipe'],
        // Own process group, so an abort kills cp and anything a wrapper script started.
        detached: true,
      })
      const kill = (): void => {
        if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return
        try {
          process.kill(-child.pid, 'SIGKILL')
        } catch {
          child.kill('SIGKILL')
        }
      }
      const onAbort = (): void => { kill() }
      signal?.addEventListener('abort', onAbort, { once: true })
      child.stderr.setEncoding('utf8')
      child.stderr.on('data', (d: string) => { if (stderr.length < 4096) stderr += d })
      child.on('error', (err) => { spawnError = err })
      const timer = setInterval(() => {
        if (polling) return
        polling = true
        fsStat(partial).then((st) => {
          if (failure === undefined && child.exitCode === null && !isAborted(signal)) progress.report(st.blocks * 512, true)
        }, () => {}).catch((err: unknown) => {
          // The progress callback threw: stop the copy and report its exception.
          failure ??= err
          kill()
        }).finally(() => { polling = false })
      }, this.progressIntervalMs)
      let settled = false
      // durable copies: write the copy back while cp still runs, so the fsync after it has only
      // the tail left (cp alone leaves it all dirty in the page cache, and the fsync then writes
      // it all; overlapped, a dense copy takes about as long as the slower of the two)
      // (its failure fails the copy: the fsync after cp, on a handle opened later, need not hear
      // of a write-back failure this loop's fdatasync was told of, and in test:io mostly did not)
      const writtenBack = this.durable ? this.writeBackWhile(partial, () => settled) : Promise.resolve(undefined)
      const stop = (): boolean => {
        if (settled) return false
        settled = true
        clearInterval(timer)
        signal?.removeEventListener('abort', onAbort)
        return true
      }
      // After a kill, settle on 'exit': 'close' also waits for stderr, which a grandchild
      // of a wrapper script could keep open long after cp itself is gone.
      child.on('exit', () => {
        if ((isAborted(signal) || failure !== undefined) && stop()) {
          child.stderr.destroy()
          if (isAborted(signal)) reject(abortedError(job.dstId, signal?.reason))
          else reject(failure)
        }
      })
      child.on('close', (code) => {
        if (!stop()) return
        if (isAborted(signal)) {
          reject(abortedError(job.dstId, signal?.reason))
        } else if (failure !== undefined) {
          reject(failure)
        } else if (spawnError !== undefined) {
          const c = errno(spawnError)
          if (c === 'ENOENT' || c === 'EACCES') resolve({ reason: `${c}: ${String((spawnError as Error).message)}` })
          else reject(new StorageError('IO', `copy to ${job.dstId}: cannot run ${this.cpCommand}`, { cause: spawnError }))
        } else if (code === 0) {
          void writtenBack.then((err) => {
            if (err === undefined) resolve('ok')
            else reject(wrap(err, job.dstId, 'copy write-back'))
          })
        } else if (SETPRIV_EXEC_FAILED.test(stderr)) {
          // setpriv could not start cp (missing, not executable): as a failed spawn would
          resolve({ reason: stderr.trim().split('\n')[0] ?? '' })
        } else if (/unrecognized option|illegal option|invalid option|unknown option|invalid argument.*(sparse|reflink)/i.test(stderr)) {
          resolve({ reason: stderr.trim().split('\n')[0] ?? '' })
        } else {
          reject(new StorageError('IO', `copy to ${job.dstId}: cp exited with ${code ?? 'signal'}: ${stderr.trim()}`))
        }
      })
    })
  }

  /**
   * Flushes `file` to disk over and over (fdatasync, in the thread pool) until `done()`: the
   * kernel writes the pages dirtied since the last flush while the writer goes on. Never throws:
   * resolves with what a flush failed with (the end of the loop), or undefined; a file not there
   * yet is waited for.
   */
  private async writeBackWhile (file: string, done: () => boolean): Promise<unknown> {
    let h: FileHandle | undefined
    try {
      while (!done()) {
        if (h === undefined) {
          try {
            h = await open(file, 'r')
          } catch {
            await new Promise(resolve => setTimeout(resolve, 20))
            continue
          }
        }
        const t = performance.now()
        await h.datasync()
        // nothing was dirty (a flush returns at once): wait a little before the next
        if (performance.now() - t < 5) await new Promise(resolve => setTimeout(resolve, 20))
      }
      return undefined
    } catch (err) {
      return err
    } finally {
      await h?.close().catch(() => {})
    }
  }

  /**
   * Pure-Node copy: reads `chunkSize` chunks (the next read overlaps the current write)
   * and writes only the 4 KiB blocks that are not all zeros, so the copy stays sparse.
   * Holes are read as zeros by the kernel (cheap, but proportional to the nominal size).
   */
  private async nodeCopy (job: CopyJob): Promise<void> {
    const { src, partial, srcSize, progress, signal } = job
    const chunk = this.chunkSize
    const zero = Buffer.alloc(chunk)
    // Own ArrayBuffers (offset 0), so the Uint32Array views are aligned.
    const bufs = [Buffer.from(new ArrayBuffer(chunk)), Buffer.from(new ArrayBuffer(chunk))]
    const words = bufs.map(b => new Uint32Array(b.buffer, b.byteOffset, b.length >>> 2))
    let rh: FileHandle
    try {
      rh = await open(src, 'r')
    } catch (err) {
      throw wrap(err, job.srcId, 'open')
    }
    let wh: FileHandle | undefined
    let pending: Promise<{ bytesRead: number }> | undefined
    try {
      wh = await open(partial, 'wx', 0o600)
      let pos = 0
      let written = 0
      let which = 0
      pending = srcSize > 0 ? rh.read(bufs[0], 0, Math.min(chunk, srcSize), 0) : undefined
      while (pending !== undefined) {
        const { bytesRead } = await pending
        pending = undefined
        if (bytesRead === 0) break // source shrank under us: copy what there is
        const cur = bufs[which]
        const curWords = words[which]
        const next = pos + bytesRead
        which ^= 1
        if (next < srcSize) pending = rh.read(bufs[which], 0, Math.min(chunk, srcSize - next), next)
        written += await writeNonZero(wh, cur, curWords, bytesRead, pos, zero)
        pos = next
        if (signal?.aborted === true) throw abortedError(job.dstId, signal.reason)
        progress.report(written)
      }
      // Trailing hole: give the file its full size.
      await wh.truncate(srcSize)
    } finally {
      // Never leave a read in flight into a buffer nobody owns; ignore its outcome.
      if (pending !== undefined) await pending.catch(() => {})
      await rh.close().catch(() => {})
      await wh?.close().catch(() => {})
    }
  }
}

/**
 * Writes the non-zero SPARSE_BLOCK-sized runs of `buf[0..len)` at file offset `pos`
 * (aligned to SPARSE_BLOCK). Returns the number of bytes written. `words` is a
 * Uint32Array view of `buf`; `zero` is at least `len` zero bytes.
 *
 * Cost matters here: a whole-chunk memcmp skips holes at memory speed, and in a chunk with
 * data a block whose first word is non-zero is data without any further look (random data
 * decides every block this way, with no allocation and no native call).
 */
async function writeNonZero (h: FileHandle, buf: Buffer, words: Uint32Array, len: number, pos: number, zero: Buffer): Promise<number> {
  if (buf.compare(zero, 0, len, 0, len) === 0) return 0
  let written = 0
  const flush = async (from: number, to: number): Promise<void> => {
    for (let o = from; o < to;) {
      const { bytesWritten } = await h.write(buf, o, to - o, pos + o)
      o += bytesWritten
    }
    written += to - from
  }
  let runStart = -1
  for (let off = 0; off < len; off += SPARSE_BLOCK) {
    const end = Math.min(off + SPARSE_BLOCK, len)
    const isData = (end - off >= 4 && words[off >>> 2] !== 0) ||
      buf.compare(zero, 0, end - off, off, end) !== 0
    if (isData && runStart < 0) {
      runStart = off
    } else if (!isData && runStart >= 0) {
      await flush(runStart, off)
      runStart = -1
    }
  }
  if (runStart >= 0) await flush(runStart, len)
  return written
}
