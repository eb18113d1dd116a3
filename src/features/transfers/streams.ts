// Stream utilities of the transfers: a byte meter with a limit, a write stream that grows the
// drive as bytes arrive, and hashing a stored image.
import { IncomingMessage } from 'node:http'
import { Socket } from 'node:net'
import { Transform, Writable, type Readable, type TransformCallback } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { gatheringWritable, type DriveStorage, type DriveWriter, type WrittenHook } from '../../storage/index.ts'
import { OffThreadSha256 } from './hashing.ts'
import { formatBytes } from '../../domain/progress.ts'

const MiB = 1024 * 1024

// ---------------------------------------------------------------------------------------------
// Streams

export class BodyTooLong extends Error {}

/**
 * Counts (and optionally hashes) the bytes passing through; fails past `limit` bytes. Hashing is
 * on the process's hash worker thread (hashing.ts): `hashing` true hashes into a hash of the
 * meter's own (digest() gives it); an OffThreadSha256 (a chunk's fork of its upload's running
 * hash) is fed, and its owner takes its digest or drops it.
 *
 * By default (hashDrive) the bytes are copied for the worker as they pass. With `hashWritten`
 * (uploads) the hash is fed from the write stream instead (pass `meter.written` as its
 * WriteStreamOptions hook), in the order the bytes were written, which is the body's; with
 * `move` (the body yields a socket's own reads: yieldsSocketReads) a batch the storage let go of
 * (local files, not rbd's pipe) moves to the worker with no copy.
 */
export class Meter extends Transform {
  bytes = 0
  /** time the receive spent on the hash (ms): handing bytes to the worker (copied or moved) and waiting when it was behind, until the input ended */
  hashMs = 0
  /** time the hash worker spent hashing these bytes (ms), known after digest() */
  workerHashMs: number | undefined
  /** performance.now() when the first byte arrived and when the input ended */
  startedAt: number | undefined
  endedAt: number | undefined
  private readonly offThread: OffThreadSha256 | undefined
  /** the meter made its hash (and so digests or releases it) */
  private readonly ownsHash: boolean
  /** bytes fed to the hash from the write stream (`hashWritten`) */
  private hashedWritten = 0

  constructor (private readonly limit: number, hashing: boolean | OffThreadSha256, private readonly onBytes?: (n: number) => void, private readonly hashWritten?: { move: boolean }) {
    super({ highWaterMark: MiB })
    this.ownsHash = hashing === true
    if (hashing === true) this.offThread = new OffThreadSha256()
    else if (hashing !== false) this.offThread = hashing
  }

  override _transform (chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.bytes + chunk.length > this.limit) {
      cb(new BodyTooLong(`more than ${this.limit} bytes`))
      return
    }
    this.bytes += chunk.length
    this.startedAt ??= performance.now()
    this.onBytes?.(this.bytes)
    if (this.offThread !== undefined && this.hashWritten === undefined) {
      const t = performance.now()
      // resolves at once unless the worker is far behind: then the upload waits for it
      this.offThread.update(chunk).then(() => { this.hashMs += performance.now() - t; cb(null, chunk) }, cb)
      return
    }
    cb(null, chunk)
  }

  override _flush (cb: TransformCallback): void {
    this.endedAt = performance.now()
    cb()
  }

  override _destroy (err: Error | null, cb: (error?: Error | null) => void): void {
    if (err) this.release()
    cb(err)
  }

  /** The write stream's hook (WriteStreamOptions.written) of a meter hashing what was written. */
  readonly written: WrittenHook = async (bufs, released) => {
    if (this.offThread === undefined || this.hashWritten === undefined) return
    const t = performance.now()
    for (const b of bufs) this.hashedWritten += b.length
    await this.offThread.give(bufs, released && this.hashWritten.move)
    // the receive's share only: the last batch goes over after the body ended, while the write
    // stream flushes and syncs (the fsync's part of the time split)
    this.hashMs += Math.max(0, Math.min(performance.now(), this.endedAt ?? Infinity) - t)
  }

  /** Bytes that moved to the hash worker without a copy (`hashWritten` with `move`); undefined when the meter does not hash what was written. */
  get movedBytes (): number | undefined {
    return this.hashWritten === undefined ? undefined : this.offThread?.moved
  }

  private digested = false

  /** Forgets the hash if it was not taken (an upload that failed after its bytes passed); not one it was given. */
  release (): void {
    if (this.digested) return
    this.digested = true
    if (this.ownsHash) this.offThread?.drop()
  }

  /** The sha256 (hex) of the bytes that passed, through a hash of its own. */
  async digest (): Promise<string> {
    if (this.digested || (this.offThread !== undefined && !this.ownsHash)) throw new Error('the hash was taken or released already, or is not the meter\'s')
    this.digested = true
    if (this.offThread === undefined) throw new Error('the meter does not hash')
    if (this.hashWritten !== undefined && this.hashedWritten !== this.bytes) throw new Error(`the hash was fed ${this.hashedWritten} of ${this.bytes} bytes: is meter.written the write stream's hook?`)
    // the worker's last slab is hashed while the image is fsynced: not counted in the receive
    const { hex, workerMs } = await this.offThread.digest()
    this.workerHashMs = workerMs
    return hex
  }
}

const socketReadStreams = new WeakSet<Readable>()

/**
 * Whether the buffers `body` yields are a network socket's own reads (each read an ArrayBuffer of
 * its own, which nothing keeps once consumed), so that written ones may move to the hash worker:
 * an HTTP request on a socket, or a stream marked by markSocketReads. Never an injected request
 * (app.inject pushes the caller's own buffers, which must stay the caller's).
 */
export function yieldsSocketReads (body: Readable): boolean {
  if (body instanceof IncomingMessage) return body.socket instanceof Socket
  return socketReadStreams.has(body)
}

/** Marks `file` (a multipart file, parsed from `request`'s body) as yielding socket reads when the request does. */
export function markSocketReads (file: Readable, request: IncomingMessage): void {
  if (yieldsSocketReads(request)) socketReadStreams.add(file)
}

/**
 * The job-log line of a finished upload: where its time went. `t0` is when the request began,
 * `stored` when the write stream had fsynced and closed, `settled` when the outcome committed.
 */
export function uploadTimeSplit (meter: Meter, t0: number, stored: number, settled: number): string {
  const ms = (n: number) => `${Math.max(0, Math.round(n))} ms`
  const ended = meter.endedAt ?? stored
  const moved = meter.movedBytes === undefined ? '' : `, ${formatBytes(meter.movedBytes)} of the body handed to it without a copy`
  const worker = meter.workerHashMs === undefined ? '' : `; ${ms(meter.workerHashMs)} hashing on a worker thread meanwhile${moved}`
  return `time split: receive ${ms(ended - t0)} (of which hash ${ms(meter.hashMs)}${worker}), fsync ${ms(stored - ended)}, settle ${ms(settled - stored)}`
}

/**
 * A write stream into drive `id` that grows the image as data arrives (sizes unknown up front,
 * e.g. a multipart file), up to `max` bytes. Growth is a sparse truncate; the final size is
 * exactly the bytes written. `expected`: an upper bound the caller knows (a request's
 * Content-Length), the first size taken, so a file that fits is never grown midway (each growth
 * closes the image, with its fsync, and resizes it: on rbd an `rbd resize`).
 */
export function growingWriteStream (storage: DriveStorage, id: string, max: number, expected?: number, written?: WrittenHook): Writable & { bytes: () => number } {
  let writer: DriveWriter | undefined
  let abandoned = false
  let pos = 0
  let capacity = 0
  const ensure = async (need: number): Promise<DriveWriter> => {
    if (writer && need <= writer.size) return writer
    if (need > max) throw new BodyTooLong(`more than ${max} bytes`)
    await writer?.close()
    writer = undefined
    capacity = Math.min(max, Math.max(need, capacity * 2, capacity === 0 ? expected ?? 0 : 0, 64 * MiB))
    await storage.resize(id, capacity)
    const opened = await storage.openForWrite(id)
    if (abandoned) {
      // destroyed while this was opening: nothing else would ever close it (on rbd, the first
      // write would start an `rbd import-diff` left waiting for its input, holding the image)
      await opened.close().catch(() => {})
      throw new Error(`the write stream into drive ${id} was destroyed`)
    }
    writer = opened
    return writer
  }
  // a multipart parser's pieces of the socket's reads are gathered and written with one writev,
  // not copied into one buffer first: the copy was the largest CPU cost of a multipart upload
  const stream = gatheringWritable({
    writeMany: async (data, len) => {
      const w = await ensure(pos + len)
      if (w.writev) await w.writev(data, pos)
      else await w.write(Buffer.concat(data, len), pos)
      pos += len
    },
    get releasesBuffers () { return writer?.releasesBuffers === true },
    written,
    final: async () => {
      await writer?.close()
      await storage.resize(id, pos)
    },
    abandon: async () => {
      abandoned = true
      const w = writer
      writer = undefined
      await w?.close().catch(() => {})
    }
  })
  return Object.assign(stream, { bytes: () => pos })
}

/** sha256 of an image, read as a stream; `onBytes` sees the bytes hashed so far. */
export async function hashDrive (storage: DriveStorage, id: string, signal?: AbortSignal, onBytes?: (n: number) => void): Promise<{ sha256: string, bytes: number }> {
  const meter = new Meter(Number.MAX_SAFE_INTEGER, true, onBytes)
  const sink = new Writable({ highWaterMark: 4 * MiB, write (_c, _e, cb) { cb() }, writev (_c, cb) { cb() } })
  await pipeline(await storage.createReadStream(id), meter, sink, { signal })
  return { sha256: await meter.digest(), bytes: meter.bytes }
}
