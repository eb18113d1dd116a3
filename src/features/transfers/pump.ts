// A download's bytes from a positional reader to the response, in 1 MiB buffers that are used
// again once the socket has taken their bytes (the write's callback), where a read stream gives
// every read a fresh buffer. Fresh 1 MiB buffers are fresh memory for the allocator to map, fault
// in and give back (bench:transfer: ~11k minor page faults per 256 MiB download, and a major GC
// now and then); reused ones are not. One read runs ahead while the previous buffer is written.
import type { ServerResponse } from 'node:http'
import type { DriveReader } from '../../storage/index.ts'

const MiB = 1024 * 1024

/** Buffers of downloads, kept for the next read once written. */
export class BufferPool {
  private readonly free: Buffer[] = []
  /** buffers taken, and made, since the start (measures for tests and benches) */
  taken = 0
  made = 0

  constructor (readonly size = MiB, private readonly maxFree = 16) {}

  take (): Buffer {
    this.taken++
    const buf = this.free.pop()
    if (buf !== undefined) return buf
    this.made++
    return Buffer.allocUnsafeSlow(this.size)
  }

  give (buf: Buffer): void {
    if (this.free.length < this.maxFree) this.free.push(buf)
  }
}

/** The process's pool: at most 16 MiB kept between downloads (and chunks read back into an upload's sha256, upload-chunked.ts). */
export const downloadBuffers = new BufferPool()

/** Resolves when `res` can take more, rejects if it closes first. */
function drained (res: ServerResponse): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error): void => {
      res.off('drain', onDrain)
      res.off('close', onClose)
      if (err) reject(err)
      else resolve()
    }
    const onDrain = (): void => { done() }
    const onClose = (): void => { done(new Error('the client went away')) }
    res.on('drain', onDrain)
    res.on('close', onClose)
  })
}

/**
 * Writes bytes [start, start + length) of `reader` to `res` and ends it; `onBytes` gets the bytes
 * handed to the response so far. Rejects when the client goes away, the reader fails or the image
 * is shorter than `length` (the caller destroys the response). `sent` is the bytes handed over.
 */
export class ImagePump {
  sent = 0

  constructor (
    private readonly reader: DriveReader,
    private readonly res: ServerResponse,
    private readonly start: number,
    private readonly length: number,
    private readonly onBytes: (sent: number) => void,
    private readonly pool: BufferPool = downloadBuffers
  ) {}

  private readAt (offset: number): Promise<{ buf: Buffer, n: number }> {
    const buf = this.pool.take()
    return this.reader.read(buf, Math.min(buf.length, this.length - offset), this.start + offset).then(
      n => ({ buf, n }),
      (err: unknown) => { this.pool.give(buf); throw err }
    )
  }

  async run (): Promise<void> {
    const { res, length, pool } = this
    let next = length > 0 ? this.readAt(0) : undefined
    try {
      while (next !== undefined) {
        const { buf, n } = await next
        next = undefined
        if (n === 0) {
          pool.give(buf)
          throw new Error(`the image ended after ${this.sent} of ${length} bytes`)
        }
        const after = this.sent + n
        if (after < length && !res.destroyed) next = this.readAt(after)
        // the buffer is the pool's again once the socket took it; a failed write may leave it
        // referenced by a write still queued, so it is not reused then
        const ok = res.write(n === buf.length ? buf : buf.subarray(0, n), (err) => { if (err == null) pool.give(buf) })
        this.sent = after
        this.onBytes(after)
        if (res.destroyed) throw new Error('the client went away')
        if (!ok && next !== undefined) await drained(res)
      }
      res.end()
    } finally {
      // a read still running when the client went away: its buffer back once it is done
      if (next !== undefined) void next.then(({ buf }) => { pool.give(buf) }, () => {})
    }
  }
}
