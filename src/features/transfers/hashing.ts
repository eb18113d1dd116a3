// SHA-256 of an upload off the event loop: the bytes are copied into 1 MiB slabs that move (are
// transferred, not copied again) to a worker thread, which hashes them and hands the slab back for
// reuse. The event loop then spends a memcpy per byte instead of the hash (about a sixth of the
// time on these machines), and the hash runs on another core while the next bytes arrive. One
// worker per process, started on first use, keeping the process alive only while it owes an
// answer (a slab or a digest); each hash has its own id there, so concurrent uploads never mix.
// A hash can be forked (the worker copies its state): a chunked upload's running hash is forked
// for each chunk, so a chunk that fails leaves the running hash as it was. Buffers an upload gave
// up (a socket's reads, once written) move to the worker whole and are freed there as soon as they
// are hashed: left to the worker's garbage collector, 256 MiB of them cost four full GCs on V8's
// helper threads (bench:transfer, loaded: the service's CPU per 256 MiB upload 0.70-0.83 s -> 0.57-0.68 s).
import { Worker } from 'node:worker_threads'

const SLAB = 1024 * 1024
/** Bytes one hash may have at the worker at once: the upload waits (backpressure) past this. */
const MAX_IN_FLIGHT = 16 * SLAB
/** Slabs kept for reuse by the process's hashes. */
const MAX_FREE_SLABS = 16
/**
 * A given buffer this large or larger that is a whole ArrayBuffer moves to the worker; a smaller one
 * may be a slice of Node's shared 8 KiB pool, and is copied.
 */
const MOVE_MIN = 16 * 1024

// plain CommonJS, evaluated as the worker's code: no file to find in src/ or dist/
const WORKER_JS = `
const { parentPort, MessageChannel } = require('node:worker_threads')
const { createHash } = require('node:crypto')
const { PerformanceObserver, constants } = require('node:perf_hooks')
const { getHeapStatistics } = require('node:v8')
const hashes = new Map()
let majorGcs = 0
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majorGcs++
}).observe({ entryTypes: ['gc'] })
// A port whose other end is closed: a buffer transferred into it is detached here and its memory
// freed at once (the message is serialized, then dropped), where a buffer merely let go of waits
// for this thread's next full GC (one per 64 MiB or so of moved buffers, run on V8's helper threads).
const { port1: discard, port2 } = new MessageChannel()
port2.close()
parentPort.on('message', (m) => {
  if (m.op === 'update') {
    let h = hashes.get(m.id)
    if (h === undefined) { h = { hash: createHash('sha256'), ms: 0 }; hashes.set(m.id, h) }
    const t = performance.now()
    const slabs = []
    const moved = []
    for (const p of m.parts) {
      h.hash.update(new Uint8Array(p.buf, 0, p.len))
      if (p.slab) slabs.push(p.buf)
      else moved.push(p.buf)
    }
    h.ms += performance.now() - t
    // (were that to throw, the buffers would only wait for the collector: never fail the hash for it)
    if (moved.length > 0) try { discard.postMessage(null, moved) } catch {}
    parentPort.postMessage({ op: 'done', id: m.id, slabs, bytes: m.bytes }, slabs)
  } else if (m.op === 'fork') {
    const from = hashes.get(m.from)
    hashes.set(m.id, from === undefined ? { hash: createHash('sha256'), ms: 0 } : { hash: from.hash.copy(), ms: from.ms })
  } else if (m.op === 'digest') {
    const h = hashes.get(m.id) ?? { hash: createHash('sha256'), ms: 0 }
    hashes.delete(m.id)
    parentPort.postMessage({ op: 'digest', id: m.id, hex: h.hash.digest('hex'), ms: h.ms })
  } else if (m.op === 'drop') {
    hashes.delete(m.id)
  } else if (m.op === 'stats') {
    parentPort.postMessage({ op: 'stats', id: m.id, stats: { externalBytes: getHeapStatistics().external_memory, majorGcs } })
  }
})`

/** Bytes for the worker: a slab (handed back for reuse) or a buffer its owner gave up (give()). */
interface Part { buf: ArrayBuffer, len: number, slab: boolean }

interface Waiter {
  done: (slabs: ArrayBuffer[], bytes: number) => void
  digest: (hex: string, ms: number) => void
  fail: (err: Error) => void
  stats?: (stats: HashWorkerStats) => void
}

/** The hash worker's heap: the external memory its isolate holds (buffers) and its major GCs so far. */
export interface HashWorkerStats { externalBytes: number, majorGcs: number }

class HashWorker {
  private readonly worker: Worker
  private readonly waiters = new Map<number, Waiter>()
  private nextId = 1
  /** answers the worker owes (slabs to hand back, digests): the worker is ref'd while there are any */
  private owed = 0
  dead: Error | undefined

  constructor () {
    this.worker = new Worker(WORKER_JS, { eval: true })
    this.worker.on('message', (m: { op: string, id: number, slabs?: ArrayBuffer[], bytes?: number, hex?: string, ms?: number, stats?: HashWorkerStats }) => {
      if (m.op === 'done' || m.op === 'digest' || m.op === 'stats') this.settle()
      const w = this.waiters.get(m.id)
      if (!w) {
        // the slabs of a hash dropped meanwhile go back to the free slabs
        if (m.op === 'done') for (const buf of m.slabs ?? []) giveBack(buf)
        return
      }
      if (m.op === 'done') w.done(m.slabs ?? [], m.bytes ?? 0)
      else if (m.op === 'digest') w.digest(m.hex!, m.ms ?? 0)
      else if (m.op === 'stats') w.stats?.(m.stats!)
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
  post (msg: { op: string, id: number, parts?: Part[], bytes?: number, from?: number }, answered = false): void {
    if (this.dead) throw this.dead
    this.worker.postMessage(msg, msg.parts?.map(p => p.buf) ?? [])
    if (answered && this.owed++ === 0) this.worker.ref()
  }

  private settle (): void {
    if (this.owed > 0 && --this.owed === 0) this.worker.unref()
  }
}

let shared: HashWorker | undefined

/** The process's hash worker's heap (tests and diagnostics); starts the worker if none runs. */
export async function hashWorkerStats (): Promise<HashWorkerStats> {
  const worker = shared ??= new HashWorker()
  return await new Promise<HashWorkerStats>((resolve, reject) => {
    const id = worker.open({ done: () => {}, digest: () => {}, fail: reject, stats: (stats) => { worker.close(id); resolve(stats) } })
    worker.post({ op: 'stats', id }, true)
  })
}

/**
 * Slabs no hash holds, shared by the process's hashes (at most MAX_FREE_SLABS, 16 MiB): a chunked
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
  if (freeSlabs.length < MAX_FREE_SLABS) freeSlabs.push(buf)
}

/** A SHA-256 computed on the process's hash worker thread. */
export class OffThreadSha256 {
  private readonly worker: HashWorker
  private readonly id: number
  /** the slab being filled; none while nothing is buffered (a parked hash holds no memory) */
  private slab: Uint8Array | undefined
  private used = 0
  private readonly spare: ArrayBuffer[] = []
  /** pieces gathered for the next message to the worker */
  private parts: Part[] = []
  /** bytes at the worker, not yet hashed */
  private inFlight = 0
  private parked = false
  private wake: (() => void) | undefined
  private result: ((r: { hex: string, ms: number }) => void) | undefined
  private error: Error | undefined
  private failResult: ((err: Error) => void) | undefined
  /** bytes that moved to the worker without a copy (give()) */
  moved = 0
  /** digested or dropped: bytes fed after are ignored (a write stream's last batch, written as its upload failed) */
  private over = false

  /** A new hash, or (`from`) a fork that starts from everything fed to `from` so far. */
  constructor (from?: OffThreadSha256) {
    if (from?.error) throw from.error
    this.worker = from?.worker ?? (shared ??= new HashWorker())
    this.id = this.worker.open({
      done: (slabs, bytes) => {
        this.inFlight -= bytes
        for (const buf of slabs) {
          if (!this.parked && this.spare.length < 4) this.spare.push(buf)
          else giveBack(buf)
        }
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

  /** Feeds a copy of `chunk`; resolves at once unless the worker is behind by MAX_IN_FLIGHT bytes. */
  async update (chunk: Uint8Array): Promise<void> {
    await this.give([chunk], false)
  }

  /**
   * Feeds buffers whose owner is done with them (written to the drive and held nowhere else, see
   * DriveWriter.releasesBuffers): each one that is a whole ArrayBuffer of MOVE_MIN bytes or more
   * moves to the worker (transferred, not copied; detached here, of length 0 after), the others
   * are copied as update() does; all of them with `move` false. Resolves as update() does.
   */
  async give (bufs: readonly Uint8Array[], move = true): Promise<void> {
    if (this.error) throw this.error
    if (this.over) return
    this.parked = false
    for (const b of bufs) {
      if (move && b.length >= MOVE_MIN && b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer) {
        // the bytes copied so far go first
        this.closeSlab()
        this.parts.push({ buf: b.buffer, len: b.length, slab: false })
        this.moved += b.length
      } else {
        this.copy(b)
      }
    }
    this.post()
    await this.caughtUp()
  }

  private copy (chunk: Uint8Array): void {
    let off = 0
    while (off < chunk.length) {
      this.slab ??= new Uint8Array(this.spare.pop() ?? freeSlabs.pop() ?? newSlab())
      const n = Math.min(SLAB - this.used, chunk.length - off)
      this.slab.set(chunk.subarray(off, off + n), this.used)
      this.used += n
      off += n
      if (this.used === SLAB) this.closeSlab()
    }
  }

  /** The slab being filled joins the next message, if it holds anything. */
  private closeSlab (): void {
    if (this.used === 0) return
    this.parts.push({ buf: this.slab!.buffer as ArrayBuffer, len: this.used, slab: true })
    this.slab = undefined
    this.used = 0
  }

  /** Sends the pieces gathered, in one message (the worker hashes them in order). */
  private post (): void {
    if (this.parts.length === 0) return
    const parts = this.parts
    const bytes = parts.reduce((n, p) => n + p.len, 0)
    this.parts = []
    this.inFlight += bytes
    this.worker.post({ op: 'update', id: this.id, parts, bytes }, true)
  }

  private async caughtUp (): Promise<void> {
    while (this.inFlight >= MAX_IN_FLIGHT && !this.error) await new Promise<void>(resolve => { this.wake = resolve })
    if (this.error) throw this.error
  }

  /**
   * Sends what is buffered and lets go of the slabs: the hash stays open on the worker, holding no
   * memory here (a chunked upload's running hash between two chunks). update() wakes it again.
   */
  park (): void {
    if (this.error) throw this.error
    this.closeSlab()
    this.post()
    this.parked = true
    for (const buf of this.spare.splice(0)) giveBack(buf)
  }

  /** The hex digest of everything fed, and the worker's hashing time (its forks' included); the hash is over after it. */
  async digest (): Promise<{ hex: string, workerMs: number }> {
    if (this.error) throw this.error
    if (this.over) throw new Error('the hash was digested or dropped already')
    this.over = true
    this.closeSlab()
    this.post()
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
    if (this.over) return
    this.over = true
    this.worker.close(this.id)
    if (this.slab !== undefined) giveBack(this.slab.buffer as ArrayBuffer)
    this.slab = undefined
    this.used = 0
    for (const buf of this.spare.splice(0)) giveBack(buf)
    if (this.worker.dead === undefined) this.worker.post({ op: 'drop', id: this.id })
  }
}
