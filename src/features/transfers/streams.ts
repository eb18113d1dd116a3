// Stream utilities of the transfers: a byte meter with a limit, a write stream that grows the
// drive as bytes arrive, and hashing a stored image.
import { createHash, type Hash } from 'node:crypto'
import { Transform, Writable, type TransformCallback } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { DriveStorage, DriveWriter } from '../../storage/index.ts'

const MiB = 1024 * 1024

// ---------------------------------------------------------------------------------------------
// Streams

export class BodyTooLong extends Error {}

/** Counts (and optionally hashes) the bytes passing through; fails past `limit` bytes. */
export class Meter extends Transform {
  bytes = 0
  /** time spent hashing (ms), for the job log */
  hashMs = 0
  /** performance.now() when the first byte arrived and when the input ended */
  startedAt: number | undefined
  endedAt: number | undefined
  private readonly hash: Hash

  /** `hashing`: into a new sha256, or into the given hash (e.g. the running hash of an upload's chunks). */
  constructor (private readonly limit: number, private readonly hashing: boolean | Hash, private readonly onBytes?: (n: number) => void) {
    super({ highWaterMark: MiB })
    this.hash = typeof hashing === 'object' ? hashing : createHash('sha256')
  }

  override _transform (chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.bytes + chunk.length > this.limit) {
      cb(new BodyTooLong(`more than ${this.limit} bytes`))
      return
    }
    this.bytes += chunk.length
    this.startedAt ??= performance.now()
    if (this.hashing !== false) {
      const t = performance.now()
      this.hash.update(chunk)
      this.hashMs += performance.now() - t
    }
    this.onBytes?.(this.bytes)
    cb(null, chunk)
  }

  override _flush (cb: TransformCallback): void {
    this.endedAt = performance.now()
    cb()
  }

  digest (): string {
    return this.hash.digest('hex')
  }
}

/**
 * The job-log line of a finished upload: where its time went. `t0` is when the request began,
 * `stored` when the write stream had fsynced and closed, `settled` when the outcome committed.
 */
export function uploadTimeSplit (meter: Meter, t0: number, stored: number, settled: number): string {
  const ms = (n: number) => `${Math.max(0, Math.round(n))} ms`
  const ended = meter.endedAt ?? stored
  return `time split: receive ${ms(ended - t0)} (of which hash ${ms(meter.hashMs)}), fsync ${ms(stored - ended)}, settle ${ms(settled - stored)}`
}

/**
 * A write stream into drive `id` that grows the image as data arrives (sizes unknown up front,
 * e.g. a multipart file), up to `max` bytes. Growth is a sparse truncate; the final size is
 * exactly the bytes written.
 */
export function growingWriteStream (storage: DriveStorage, id: string, max: number): Writable & { bytes: () => number } {
  let writer: DriveWriter | undefined
  let pos = 0
  let capacity = 0
  const ensure = async (need: number): Promise<DriveWriter> => {
    if (writer && need <= writer.size) return writer
    if (need > max) throw new BodyTooLong(`more than ${max} bytes`)
    await writer?.close()
    writer = undefined
    capacity = Math.min(max, Math.max(need, capacity * 2, 64 * MiB))
    await storage.resize(id, capacity)
    writer = await storage.openForWrite(id)
    return writer
  }
  const put = async (data: Buffer): Promise<void> => {
    const w = await ensure(pos + data.length)
    await w.write(data, pos)
    pos += data.length
  }
  const stream = new Writable({
    highWaterMark: MiB,
    write (chunk: Buffer, _enc, cb) { put(chunk).then(() => cb(), cb) },
    writev (chunks, cb) { put(Buffer.concat(chunks.map(c => c.chunk as Buffer))).then(() => cb(), cb) },
    final (cb) {
      (async () => {
        await writer?.close()
        await storage.resize(id, pos)
      })().then(() => cb(), cb)
    },
    destroy (err, cb) {
      const w = writer
      writer = undefined
      void (w ? w.close().catch(() => {}) : Promise.resolve()).then(() => cb(err))
    }
  })
  return Object.assign(stream, { bytes: () => pos })
}

/** sha256 of an image, read as a stream; `onBytes` sees the bytes hashed so far. */
export async function hashDrive (storage: DriveStorage, id: string, signal?: AbortSignal, onBytes?: (n: number) => void): Promise<{ sha256: string, bytes: number }> {
  const meter = new Meter(Number.MAX_SAFE_INTEGER, true, onBytes)
  const sink = new Writable({ highWaterMark: 4 * MiB, write (_c, _e, cb) { cb() }, writev (_c, cb) { cb() } })
  await pipeline(await storage.createReadStream(id), meter, sink, { signal })
  return { sha256: meter.digest(), bytes: meter.bytes }
}
