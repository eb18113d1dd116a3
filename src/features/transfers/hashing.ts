// SHA-256 of an upload off the event loop: the bytes are copied into 1 MiB slabs that move (are
// transferred, not copied again) to a worker thread, which hashes them and hands the slab back for
// reuse. The event loop then spends a memcpy per byte instead of the hash (about a sixth of the
// time on these machines), and the hash runs on another core while the next bytes arrive. One
// worker per process, started on first use, keeping the process alive only while a hash is open;
// each hash has its own id there, so concurrent uploads never mix.
import { Worker } from 'node:worker_threads'

const SLAB = 1024 * 1024
/** Slabs one hash may have at the worker at once: the upload waits (backpressure) past this. */
const MAX_IN_FLIGHT = 16

// plain CommonJS, evaluated as the worker's code: no file to find in src/ or dist/
const WORKER_JS = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
const hashes = new Map()
parentPort.on('message', (m) => {
  if (m.op === 'update') {
    let h = hashes.get(m.id)
    if (h === undefined) { h = { hash: createHash('sha256'), ms: 0 }; hashes.set(m.id, h) }
    const t = performance.now()
    h.hash.update(new Uint8Array(m.buf, 0, m.len))
    h.ms += performance.now() - t
    parentPort.postMessage({ op: 'done', id: m.id, buf: m.buf }, [m.buf])
  } else if (m.op === 'digest') {
    const h = hashes.get(m.id) ?? { hash: createHash('sha256'), ms: 0 }
    hashes.delete(m.id)
    parentPort.postMessage({ op: 'digest', id: m.id, hex: h.hash.digest('hex'), ms: h.ms })
  } else if (m.op === 'drop') {
    hashes.delete(m.id)
  }
})`

interface Waiter {
  done: (buf: ArrayBuffer) => void
  digest: (hex: string, ms: number) => void
  fail: (err: Error) => void
}

class HashWorker {
  private readonly worker: Worker
  private readonly waiters = new Map<number, Waiter>()
  private nextId = 1
  dead: Error | undefined

  constructor () {
    this.worker = new Worker(WORKER_JS, { eval: true })
    this.worker.on('message', (m: { op: string, id: number, buf?: ArrayBuffer, hex?: string, ms?: number }) => {
      const w = this.waiters.get(m.id)
      if (!w) return
      if (m.op === 'done') w.done(m.buf!)
      else if (m.op === 'digest') w.digest(m.hex!, m.ms ?? 0)
    })
    const fail = (err: Error) => {
      this.dead = err
      if (shared === this) shared = undefined
      for (const w of this.waiters.values()) w.fail(err)
      this.waiters.clear()
    }
    this.worker.on('error', fail)
    this.worker.on('exit', (code) => fail(new Error(`the hash worker exited (${code})`)))
    // after the listeners: adding a 'message' listener refs the worker's port again
    this.worker.unref()
  }

  // the worker keeps the process alive only while some hash is open (awaiting it must not end the process)
  open (w: Waiter): number {
    const id = this.nextId++
    this.waiters.set(id, w)
    if (this.waiters.size === 1) this.worker.ref()
    return id
  }

  close (id: number): void {
    if (this.waiters.delete(id) && this.waiters.size === 0) this.worker.unref()
  }

  post (msg: { op: string, id: number, buf?: ArrayBuffer, len?: number }): void {
    if (this.dead) throw this.dead
    this.worker.postMessage(msg, msg.buf ? [msg.buf] : [])
  }
}

let shared: HashWorker | undefined

/** A SHA-256 computed on the process's hash worker thread. */
export class OffThreadSha256 {
  private readonly worker: HashWorker
  private readonly id: number
  private slab = new Uint8Array(new ArrayBuffer(SLAB))
  private used = 0
  private readonly spare: ArrayBuffer[] = []
  private inFlight = 0
  private wake: (() => void) | undefined
  private result: ((r: { hex: string, ms: number }) => void) | undefined
  private error: Error | undefined
  private failResult: ((err: Error) => void) | undefined
  /** milliseconds the event loop spent copying bytes to the worker */
  copyMs = 0

  constructor () {
    this.worker = shared ??= new HashWorker()
    this.id = this.worker.open({
      done: (buf) => {
        this.inFlight--
        if (this.spare.length < 4) this.spare.push(buf)
        const wake = this.wake
        this.wake = undefined
        wake?.()
      },
      digest: (hex, ms) => this.result?.({ hex, ms }),
      fail: (err) => {
        this.error = err
        this.wake?.()
        this.failResult?.(err)
      }
    })
  }

  /** Feeds bytes; resolves at once unless the worker is behind by MAX_IN_FLIGHT slabs. */
  async update (chunk: Uint8Array): Promise<void> {
    if (this.error) throw this.error
    const t = performance.now()
    let off = 0
    while (off < chunk.length) {
      const n = Math.min(SLAB - this.used, chunk.length - off)
      this.slab.set(chunk.subarray(off, off + n), this.used)
      this.used += n
      off += n
      if (this.used === SLAB) this.send()
    }
    this.copyMs += performance.now() - t
    while (this.inFlight >= MAX_IN_FLIGHT && !this.error) await new Promise<void>(resolve => { this.wake = resolve })
    if (this.error) throw this.error
  }

  private send (): void {
    const buf = this.slab.buffer as ArrayBuffer
    const len = this.used
    this.inFlight++
    this.worker.post({ op: 'update', id: this.id, buf, len })
    this.slab = new Uint8Array(this.spare.pop() ?? new ArrayBuffer(SLAB))
    this.used = 0
  }

  /** The hex digest of everything fed, and the worker's hashing time; the hash is over after it. */
  async digest (): Promise<{ hex: string, workerMs: number }> {
    if (this.error) throw this.error
    if (this.used > 0) this.send()
    const r = await new Promise<{ hex: string, ms: number }>((resolve, reject) => {
      this.result = resolve
      this.failResult = reject
      this.worker.post({ op: 'digest', id: this.id })
    })
    this.worker.close(this.id)
    return { hex: r.hex, workerMs: r.ms }
  }

  /** Forgets the hash (the upload failed). */
  drop (): void {
    this.worker.close(this.id)
    if (this.worker.dead === undefined) this.worker.post({ op: 'drop', id: this.id })
  }
}
