// SHA-256 of an upload off the event loop: the bytes are copied into 1 MiB slabs that move (are
// transferred, not copied again) to a worker thread, which hashes them and hands the slab back for
// reuse. The event loop then spends a memcpy per byte instead of the hash (about a sixth of the
// time on these machines), and the hash runs on another core while the next bytes arrive. One
// worker per process, started on first use, keeping the process alive only while it owes an
// answer (a slab or a digest); each hash has its own id there, so concurrent uploads never mix.
// A hash can be forked (the worker copies its state): a chunked upload's running hash is forked
// for each chunk, so a chunk that fails leaves the running hash as it was.
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
  } else if (m.op === 'fork') {
    const from = hashes.get(m.from)
    hashes.set(m.id, from === undefined ? { hash: createHash('sha256'), ms: 0 } : { hash: from.hash.copy(), ms: from.ms })
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
  /** answers the worker owes (slabs to hand back, digests): the worker is ref'd while there are any */
  private owed = 0
  dead: Error | undefined

  constructor () {
    this.worker = new Worker(WORKER_JS, { eval: true })
    this.worker.on('message', (m: { op: string, id: number, buf?: ArrayBuffer, hex?: string, ms?: number }) => {
      if (m.op === 'done' || m.op === 'digest') this.settle()
      const w = this.waiters.get(m.id)
      if (!w) {
        // a slab of a hash dropped meanwhile goes back to the free slabs
        if (m.op === 'done' && m.buf !== undefined) giveBack(m.buf)
        return
      }
      if (m.op === 'done') w.done(m.buf!)
      else if (m.op === 'digest') w.digest(m.hex!, m.ms ?? 0)
    })
    const fail = (err: Error) => {
      this.dead = err
      if (shared === this) shared = undefined
      for (const w of this.waiters.values()) w.fail(err)
      this.waiters.clear()
      this.owed = 0
    }
    this.worker.on('error', fail)
    this.worker.on('exit', (code) => fail(new Error(`the hash worker exited (${code})`)))
    // after the listeners: adding a 'message' listener refs the worker's port again
    this.worker.unref()
  }

  open (w: Waiter): number {
    const id = this.nextId++
    this.waiters.set(id, w)
    return id
  }

  close (id: number): void {
    this.waiters.delete(id)
  }

  /**
   * Sends a message; `answered` ones (update, digest) keep the process alive until the worker
   * answers (awaiting a digest must not end the process), but a hash merely open (a chunked
   * upload's running hash between chunks) does not.
   */
  post (msg: { op: string, id: number, buf?: ArrayBuffer, len?: number, from?: number }, answered = false): void {
    if (this.dead) throw this.dead
    this.worker.postMessage(msg, msg.buf ? [msg.buf] : [])
    if (answered && this.owed++ === 0) this.worker.ref()
  }

  private settle (): void {
    if (this.owed > 0 && --this.owed === 0) this.worker.unref()
  }
}

let shared: HashWorker | undefined

/**
 * Slabs no hash holds, shared by the process's hashes (at most MAX_IN_FLIGHT, 16 MiB): a chunked
 * upload's hash lets go of its slabs between chunks and the next chunk's fork takes them from
 * here, instead of allocating 16 fresh 1 MiB buffers per chunk (that churn of external memory set
 * off a major GC in every chunked upload of bench:transfer).
 */
const freeSlabs: ArrayBuffer[] = []
let allocated = 0
/** Slabs allocated by this process so far (tests: the slabs are reused). */
export function slabsAllocated (): number { return allocated }
function newSlab (): ArrayBuffer {
  allocated++
  return new ArrayBuffer(SLAB)
}
function giveBack (buf: ArrayBuffer): void {
  if (freeSlabs.length < MAX_IN_FLIGHT) freeSlabs.push(buf)
}

/** A SHA-256 computed on the process's hash worker thread. */
export class OffThreadSha256 {
  private readonly worker: HashWorker
  private readonly id: number
  /** the slab being filled; none while nothing is buffered (a parked hash holds no memory) */
  private slab: Uint8Array | undefined
  private used = 0
  private readonly spare: ArrayBuffer[] = []
  private inFlight = 0
  private parked = false
  private wake: (() => void) | undefined
  private result: ((r: { hex: string, ms: number }) => void) | undefined
  private error: Error | undefined
  private failResult: ((err: Error) => void) | undefined
  /** milliseconds the event loop spent copying bytes to the worker */
  copyMs = 0

  /** A new hash, or (`from`) a fork that starts from everything fed to `from` so far. */
  constructor (from?: OffThreadSha256) {
    if (from?.error) throw from.error
    this.worker = from?.worker ?? (shared ??= new HashWorker())
    this.id = this.worker.open({
      done: (buf) => {
        this.inFlight--
        if (!this.parked && this.spare.length < 4) this.spare.push(buf)
        else giveBack(buf)
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
    if (from !== undefined) {
      // the bytes `from` still buffers go first: the worker handles messages in order
      from.park()
      try {
        this.worker.post({ op: 'fork', id: this.id, from: from.id })
      } catch (err) {
        this.worker.close(this.id)
        throw err
      }
    }
  }

  /** Feeds bytes; resolves at once unless the worker is behind by MAX_IN_FLIGHT slabs. */
  async update (chunk: Uint8Array): Promise<void> {
    if (this.error) throw this.error
    this.parked = false
    const t = performance.now()
    let off = 0
    while (off < chunk.length) {
      this.slab ??= new Uint8Array(this.spare.pop() ?? freeSlabs.pop() ?? newSlab())
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
    const buf = this.slab!.buffer as ArrayBuffer
    const len = this.used
    this.inFlight++
    this.slab = undefined
    this.used = 0
    this.worker.post({ op: 'update', id: this.id, buf, len }, true)
  }

  /**
   * Sends what is buffered and lets go of the slabs: the hash stays open on the worker, holding no
   * memory here (a chunked upload's running hash between two chunks). update() wakes it again.
   */
  park (): void {
    if (this.error) throw this.error
    if (this.used > 0) this.send()
    this.parked = true
    for (const buf of this.spare.splice(0)) giveBack(buf)
  }

  /** The hex digest of everything fed, and the worker's hashing time (its forks' included); the hash is over after it. */
  async digest (): Promise<{ hex: string, workerMs: number }> {
    if (this.error) throw this.error
    if (this.used > 0) this.send()
    const r = await new Promise<{ hex: string, ms: number }>((resolve, reject) => {
      this.result = resolve
      this.failResult = reject
      this.worker.post({ op: 'digest', id: this.id }, true)
    })
    this.worker.close(this.id)
    // every slab came back before the digest (the worker answers in order)
    for (const buf of this.spare.splice(0)) giveBack(buf)
    return { hex: r.hex, workerMs: r.ms }
  }

  /** Forgets the hash (the upload failed, or its running hash is no longer needed). */
  drop (): void {
    this.worker.close(this.id)
    if (this.slab !== undefined) giveBack(this.slab.buffer as ArrayBuffer)
    this.slab = undefined
    for (const buf of this.spare.splice(0)) giveBack(buf)
    if (this.worker.dead === undefined) this.worker.post({ op: 'drop', id: this.id })
  }
}
