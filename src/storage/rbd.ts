/**
 * DriveStorage on Ceph RBD: one image per drive, `<pool>/<id>`, driven through the `rbd` CLI
 * (no maintained librbd binding exists on npm; each call costs ~0.15 s of process start).
 *
 * - Reads stream `rbd export-diff <img> -` (only allocated extents travel; holes are made
 *   here as zeros), sliced to the requested range; the process is killed once past its end.
 * - Writes stream `rbd import-diff - <img>`: each chunk is one 'w' record at its offset, so
 *   positional writes need no temporary file.
 * - Copy-on-write clones are a snapshot `c-<dst>` of the source plus a format-2 child.
 *   A snapshot belongs to exactly one child and is removed when that child is flattened or
 *   deleted. A deleted image that still has children is renamed to `deleted.<id>.<rand>` and
 *   removed when its last child goes, so nothing leaks and the source id is free at once.
 * - A flatten cut short (killed service, cancel) may leave the object map claiming objects
 *   whose data never landed; the next flatten runs with the object map off (see prepareFlatten).
 * - Full copies (the contract's `copy`) are a clone to `<dst>.partial.<attempt>` (of a snapshot
 *   `c-<dst>.<attempt>`: each attempt of the copying job has its own, so a stale attempt never
 *   removes a newer one's), a flatten with progress, and a rename into place.
 *
 * Names reaching the CLI are validated (pool, drive ids) and passed as separate argv entries
 * (spawn, never a shell), so nothing can escape the pool.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { Readable, type Writable } from 'node:stream'
import { gatheringWritable } from './gather.ts'
import { dyingWithParent } from './parent-death.ts'
import { Progress, ProgressCallbackError } from './progress.ts'
import {
  MAX_DRIVE_SIZE,
  StorageError,
  isStorageError,
  type CopyOptions,
  type CopyProgress,
  type CowCloneOptions,
  type DrivePlacement,
  type DriveStat,
  type DriveStorage,
  type DriveWriter,
  type FlattenOptions,
  type ReadRange,
  type StorageGuard,
  type WriteStreamOptions,
} from './types.ts'

const ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
/** Ceph pool names may hold more, but never '/', '@' or a leading '-' (they would change the spec). */
const POOL_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$/
const MiB = 1024 * 1024
const HIDDEN_PREFIX = 'deleted.'
/** How long a process has to end after SIGTERM before it gets SIGKILL. */
const KILL_GRACE_MS = 3000
const DIFF_HEADER = Buffer.from('rbd diff v1\n')

export interface RbdDriveStorageOptions {
  /** Pool of the images. */
  pool: string
  /** ceph.conf of the cluster (default: the CLI's own lookup, /etc/ceph/ceph.conf). */
  conf?: string
  /** Ceph user without the `client.` prefix (`--id`), when auth is on. */
  user?: string
  /** Keyring holding that user's key. */
  keyring?: string
  /** The rbd executable (default 'rbd'). */
  rbdCommand?: string
  /** The ceph executable (default 'ceph'), asked how the pool places its copies (placement()). */
  cephCommand?: string
  /** Seconds before an unreachable monitor fails a call (client_mount_timeout, rados_mon_op_timeout). */
  connectTimeoutSeconds?: number
  /**
   * Seconds one OSD operation may wait for its answer before the call fails (rados_osd_op_timeout,
   * default 60). Ceph's own default, 0, waits forever: a stalled placement group or a paused
   * cluster would hold a drive read, a clone or a flatten without end.
   */
  opTimeoutSeconds?: number
  /**
   * Seconds a short call (info, du, create, snapshot, clone, rename, image-meta, feature) may take
   * in all before its process is killed and the call fails as UNAVAILABLE (default 3 x
   * opTimeoutSeconds; 0: none). Whatever else an rbd process may wait on, beyond one OSD operation,
   * this bounds too. Calls whose work grows with the image (flatten, rm, a shrinking resize,
   * object-map rebuild) have no such bound; they end when their job is aborted.
   */
  callTimeoutSeconds?: number
  /** How often copy/flatten progress is reported, ms (default 200). */
  progressIntervalMs?: number
  /**
   * How often a running `rbd rm` looks whether its image is gone, from the pool and from its trash,
   * ms (default 5000): one that waits on after another remover removed the image is ended (see
   * rmImage).
   */
  removalCheckMs?: number
}

interface ImageInfo {
  name: string
  id: string
  size: number
  features?: string[]
  parent?: { pool: string, image: string, id: string, snapshot: string }
}

interface RemoveOptions {
  /** 'leave': an image being removed (in this process) or still open elsewhere is left to its owner. */
  busy?: 'wait' | 'leave'
  guard?: StorageGuard
  /** Let go, too, the parent the image's own flatten mark names (an image no longer a clone; see markedParent). */
  markedParent?: boolean
}

/**
 * Image metadata key set (to the image's own id) while a flatten of that image may be running or
 * its last steps (the object map back on, the parent let go) are not done; found at the start of
 * a flatten of a clone, it says an earlier one was cut (see flattenImage), and on an image no
 * longer a clone, that an earlier flatten's last steps failed (see resumeFlatten). Clones copy
 * their parent's metadata, so the value (the id) tells a child's inherited key from its own.
 * Its value: `<id>`, then `:off:<features>` once those were turned off for the flatten, then
 * `;parent=<parent image id>@<snapshot>` (a parent in the image's pool): the snapshot to let go.
 */
const FLATTEN_MARK = 'clonejobs.flattening'

interface FlattenMark { id: string, off?: string[], parent?: { id: string, snapshot: string } }

/** A FLATTEN_MARK value read back (marks written before the parent was recorded have none). */
export function parseFlattenMark (value: string): FlattenMark {
  const at = value.indexOf(';parent=')
  const head = at < 0 ? value : value.slice(0, at)
  const parent = at < 0 ? undefined : value.slice(at + ';parent='.length)
  const off = head.indexOf(':off:')
  const snapAt = parent?.indexOf('@') ?? -1
  return {
    id: off < 0 ? head : head.slice(0, off),
    ...(off < 0 ? {} : { off: head.slice(off + ':off:'.length).split(',').filter(f => f !== '') }),
    ...(parent === undefined || snapAt <= 0 ? {} : { parent: { id: parent.slice(0, snapAt), snapshot: parent.slice(snapAt + 1) } })
  }
}

export function flattenMarkValue (mark: FlattenMark): string {
  return mark.id + (mark.off === undefined ? '' : `:off:${mark.off.join(',')}`) + (mark.parent === undefined ? '' : `;parent=${mark.parent.id}@${mark.parent.snapshot}`)
}

function assertSize (size: number, what = 'size'): void {
  if (!Number.isSafeInteger(size) || size < 0 || size > MAX_DRIVE_SIZE) {
    throw new RangeError(`${what} must be an integer between 0 and ${MAX_DRIVE_SIZE}, got ${String(size)}`)
  }
}

function checkId (id: unknown): string {
  if (typeof id !== 'string' || !ID_RE.test(id)) {
    throw new StorageError('INVALID_ID', `invalid drive id ${JSON.stringify(String(id)).slice(0, 80)}`)
  }
  return id
}

/** The CLI exits with the errno of the failure; a few stderr texts say more. */
export function rbdError (code: number | null, stderr: string, what: string): StorageError {
  const text = stderr.trim().split('\n').filter(l => l !== '').slice(-3).join(' | ').slice(0, 400)
  const message = `${what}: ${text || `rbd exited with ${String(code)}`}`
  // setpriv could not start rbd (not installed): like a failed spawn
  if (/couldn't connect to the cluster|timed out|authenticate|connection refused|^setpriv: failed to execute/im.test(stderr)) {
    return new StorageError('UNAVAILABLE', message)
  }
  switch (code) {
    case 2: return new StorageError('NOT_FOUND', message)
    case 17: return new StorageError('EXISTS', message)
    case 110: case 111: case 107: case 108: case 112: case 113: case 1: case 13:
      return new StorageError('UNAVAILABLE', message)
    default: return new StorageError('IO', message)
  }
}

/** A function, so TypeScript does not narrow `signal.aborted` across awaits. */
function isAborted (signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true
}

function abortedError (id: string, reason?: unknown): StorageError {
  return new StorageError('ABORTED', `operation on drive ${id} aborted`, { cause: reason })
}

/** SIGTERM (librbd stops cleanly), then SIGKILL if the process is still there after KILL_GRACE_MS. */
function endProcess (child: ChildProcess): void {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill('SIGTERM')
  setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }, KILL_GRACE_MS).unref()
}

interface RunOptions {
  /** Aborting kills the process; the call rejects with ABORTED. */
  signal?: AbortSignal
  /** Each piece of stderr as it comes (progress). */
  onStderr?: (text: string) => void
  /** Work that grows with the image: no callTimeoutSeconds bound. */
  long?: boolean
  /** The executable (default: the rbd one). */
  command?: string
  /** Runs just before the process starts; its error rejects the call as it is, nothing started. */
  guard?: StorageGuard
}

/** How long the pool's placement, once read, is kept (a pool's size or CRUSH rule rarely changes). */
const PLACEMENT_TTL_MS = 60_000

function writeRecordHeader (offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(17)
  b.write('w', 0, 'latin1')
  b.writeBigUInt64LE(BigInt(offset), 1)
  b.writeBigUInt64LE(BigInt(length), 9)
  return b
}

/** Pulls exact byte counts out of an async iterable of Buffers. */
class PullReader {
  private buf: Buffer = Buffer.alloc(0)
  private done = false
  constructor (private readonly it: AsyncIterator<Buffer>) {}
  private async fill (n: number): Promise<void> {
    while (this.buf.length < n && !this.done) {
      const r = await this.it.next()
      if (r.done === true) this.done = true
      else this.buf = this.buf.length === 0 ? r.value : Buffer.concat([this.buf, r.value])
    }
    if (this.buf.length < n) throw new StorageError('IO', 'rbd export-diff stream ended early')
  }

  async take (n: number): Promise<Buffer> {
    await this.fill(n)
    const out = this.buf.subarray(0, n)
    this.buf = this.buf.subarray(n)
    return out
  }

  /** Up to `max` bytes (at least 1) of what is buffered or comes next. */
  async some (max: number): Promise<Buffer> {
    await this.fill(1)
    const n = Math.min(max, this.buf.length)
    const out = this.buf.subarray(0, n)
    this.buf = this.buf.subarray(n)
    return out
  }
}

export class RbdDriveStorage implements DriveStorage {
  readonly pool: string
  private readonly rbdCommand: string
  private readonly cephCommand: string
  /** The last placement read from the cluster, and when (placement()) */
  private placementRead: { at: number, value: Promise<DrivePlacement> } | undefined
  private readonly baseArgs: string[]
  private readonly progressIntervalMs: number
  private readonly removalCheckMs: number
  private readonly copying = new Set<string>()
  /** Removals under way in this process, by image name (removeImage) */
  private readonly removing = new Map<string, Promise<boolean>>()
  /** undefined: short calls have no deadline of their own */
  private readonly callTimeoutMs: number | undefined
  /** Every rbd process running for this storage, so close() can end them. */
  private readonly children = new Set<ChildProcess>()
  private closed = false

  constructor (options: RbdDriveStorageOptions) {
    if (!POOL_RE.test(options.pool)) throw new Error(`invalid RBD pool name ${JSON.stringify(options.pool)}`)
    this.pool = options.pool
    this.rbdCommand = options.rbdCommand ?? 'rbd'
    this.cephCommand = options.cephCommand ?? 'ceph'
    this.progressIntervalMs = options.progressIntervalMs ?? 200
    this.removalCheckMs = options.removalCheckMs ?? 5000
    const timeout = String(options.connectTimeoutSeconds ?? 10)
    const opTimeout = options.opTimeoutSeconds ?? 60
    const callTimeout = options.callTimeoutSeconds ?? 3 * opTimeout
    this.callTimeoutMs = callTimeout > 0 ? callTimeout * 1000 : undefined
    this.baseArgs = [
      ...(options.conf !== undefined ? ['--conf', options.conf] : []),
      ...(options.user !== undefined ? ['--id', options.user] : []),
      ...(options.keyring !== undefined ? ['--keyring', options.keyring] : []),
      // an unreachable monitor fails the call after `timeout` s instead of hanging for minutes
      '--client_mount_timeout', timeout,
      '--rados_mon_op_timeout', timeout,
      // an OSD that never answers fails the call (ETIMEDOUT) instead of holding it forever
      '--rados_osd_op_timeout', String(opTimeout),
      // no log files or admin sockets for short-lived client processes
      '--log_file', '', '--admin_socket', '',
    ]
  }

  /** `<pool>/<name>`; `name` is a validated id or a name this class made from one. */
  private spec (name: string): string {
    return `${this.pool}/${name}`
  }

  path (id: string): string {
    return `rbd:${this.spec(checkId(id))}`
  }

  private spawnRbd (args: string[], stdio: Array<'pipe' | 'ignore'>, command = this.rbdCommand): ChildProcess {
    // an `rbd flatten` outliving a killed service would go on flattening (and skip the cleanup of
    // its parent snapshot, which the process taking the job over then finds already detached):
    // on Linux the rbd process gets SIGTERM when the service dies
    if (this.closed) throw new StorageError('UNAVAILABLE', `rbd ${args[0]}: the storage is closed (the service is stopping)`)
    const argv = dyingWithParent([command, ...this.baseArgs, ...args], 'TERM')
    const child = spawn(argv[0], argv.slice(1), { stdio: stdio as ['pipe', 'pipe', 'pipe'] })
    this.children.add(child)
    const forget = (): void => { this.children.delete(child) }
    child.once('close', forget)
    child.once('error', forget)
    return child
  }

  /**
   * Ends every rbd process still running (SIGTERM, then SIGKILL) and refuses new calls, so a
   * stopping service or a finished test is not held by a call that never returns. Their calls
   * reject; jobs were handed back before (the engine stops first).
   */
  async close (): Promise<void> {
    this.closed = true
    await Promise.all([...this.children].map(child => new Promise<void>(resolve => {
      if (child.exitCode !== null || child.signalCode !== null) { resolve(); return }
      child.once('close', () => resolve())
      child.once('error', () => resolve())
      endProcess(child)
    })))
  }

  /** The error of an rbd process that exited with `code`: cut short by close(), or rbdError's mapping. */
  private exitError (code: number | null, stderr: string, what: string): StorageError {
    if (this.closed) return new StorageError('UNAVAILABLE', `${what}: cut short, the storage is closed (the service is stopping)`)
    return rbdError(code, stderr, what)
  }

  /** Runs one rbd command to completion; rejects with a mapped StorageError. */
  private run (args: string[], what: string, options: RunOptions = {}): Promise<string> {
    const { signal, onStderr } = options
    return new Promise((resolve, reject) => {
      if (signal?.aborted === true) { reject(abortedError(what, signal.reason)); return }
      try {
        options.guard?.()
      } catch (err) {
        reject(err)
        return
      }
      const command = options.command ?? this.rbdCommand
      const child = this.spawnRbd(args, ['ignore', 'pipe', 'pipe'], command)
      let out = ''
      let err = ''
      child.stdout?.setEncoding('utf8').on('data', (d: string) => { out += d })
      child.stderr?.setEncoding('utf8').on('data', (d: string) => {
        if (err.length < 16384) err += d
        onStderr?.(d)
      })
      // SIGTERM lets librbd stop cleanly; whatever it did so far stays consistent
      const onAbort = (): void => { endProcess(child) }
      signal?.addEventListener('abort', onAbort, { once: true })
      // a short call that is still running after callTimeoutMs is waiting on something that
      // may never answer: end it, and fail the call as the cluster being unavailable
      let timedOut = false
      const timer = options.long === true || this.callTimeoutMs === undefined
        ? undefined
        : setTimeout(() => { timedOut = true; endProcess(child) }, this.callTimeoutMs)
      let spawnError: Error | undefined
      child.on('error', (e) => { spawnError = e })
      child.on('close', (code) => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        if (signal?.aborted === true) reject(abortedError(what, signal.reason))
        else if (timedOut) reject(new StorageError('UNAVAILABLE', `${what}: no answer from the cluster within ${(this.callTimeoutMs ?? 0) / 1000} s`))
        else if (spawnError !== undefined && !this.closed) reject(new StorageError('UNAVAILABLE', `${what}: cannot run ${command}: ${spawnError.message}`, { cause: spawnError }))
        else if (code === 0) resolve(out)
        else reject(this.exitError(code, err, what))
      })
    })
  }

  private async json<T> (args: string[], what: string, options: RunOptions = {}): Promise<T> {
    const out = await this.run([...args, '--format', 'json'], what, options)
    try {
      return JSON.parse(out) as T
    } catch (err) {
      throw new StorageError('IO', `${what}: unreadable ${options.command ?? 'rbd'} output`, { cause: err })
    }
  }

  /**
   * CRUSH stripes each image's 4 MiB objects over every OSD of the pool, so images fail apart only
   * when their copies do: 'spread' when the pool keeps two copies or more and its rule puts them in
   * different buckets of a type wider than the OSD (host, rack, ...), of which the cluster has two
   * or more; otherwise every image sits on the same disks of one host ('one-host'). Read from the
   * cluster (the ceph CLI, read-only mon commands) and kept for a minute.
   */
  async placement (): Promise<DrivePlacement> {
    const now = Date.now()
    if (this.placementRead === undefined || now - this.placementRead.at > PLACEMENT_TTL_MS) {
      const read = { at: now, value: this.readPlacement() }
      this.placementRead = read
      // a failed read is not kept: the next call asks again
      read.value.catch(() => { if (this.placementRead === read) this.placementRead = undefined })
    }
    return await this.placementRead.value
  }

  private async readPlacement (): Promise<DrivePlacement> {
    const ceph = { command: this.cephCommand }
    const { size } = await this.json<{ size: number }>(['osd', 'pool', 'get', this.pool, 'size'], `size of pool ${this.pool}`, ceph)
    if (!(size >= 2)) return 'one-host'
    // side by side: each is a process start of the (Python) CLI
    const [{ crush_rule: name }, rules, { nodes }] = await Promise.all([
      this.json<{ crush_rule: string }>(['osd', 'pool', 'get', this.pool, 'crush_rule'], `CRUSH rule of pool ${this.pool}`, ceph),
      this.json<Array<{ rule_name: string, steps: Array<{ op: string, type?: string }> }>>(['osd', 'crush', 'rule', 'dump'], 'CRUSH rules', ceph),
      this.json<{ nodes: Array<{ type: string, children?: number[] }> }>(['osd', 'tree'], 'OSD tree', ceph)
    ])
    // the first choose step's bucket type is the widest the copies are split over
    const domain = rules.find(r => r.rule_name === name)?.steps.find(s => s.op.startsWith('choose'))?.type
    if (domain === undefined || domain === 'osd') return 'one-host'
    return nodes.filter(n => n.type === domain && (n.children?.length ?? 0) > 0).length >= 2 ? 'spread' : 'one-host'
  }

  private async info (name: string): Promise<ImageInfo> {
    return await this.json<ImageInfo>(['info', this.spec(name)], `info ${name}`)
  }

  private async infoOrNull (name: string): Promise<ImageInfo | null> {
    try {
      return await this.info(name)
    } catch (err) {
      if (err instanceof StorageError && err.code === 'NOT_FOUND') return null
      throw err
    }
  }

  async create (id: string, size: number): Promise<void> {
    checkId(id)
    assertSize(size)
    await this.run(['create', '--size', `${size}B`, this.spec(id)], `create ${id}`)
  }

  async resize (id: string, size: number, signal?: AbortSignal, guard?: StorageGuard): Promise<void> {
    checkId(id)
    assertSize(size)
    const info = await this.json<ImageInfo>(['info', this.spec(id)], `info ${id}`, { signal })
    if (info.size === size) return
    // shrinking deletes the objects past the new end: work that grows with the image (the guard
    // runs just before the process starts)
    await this.run(['resize', '--no-progress', '--allow-shrink', '--size', `${size}B`, this.spec(id)], `resize ${id}`, { signal, long: true, guard })
  }

  async stat (id: string): Promise<DriveStat> {
    checkId(id)
    const info = await this.info(id)
    // `rbd du` asserts on empty images (Ceph 16.2.15), and an empty image holds nothing anyway
    if (info.size === 0) return { size: 0, allocated: 0 }
    const du = await this.json<{ images: Array<{ name: string, used_size: number }> }>(['du', this.spec(id)], `du ${id}`)
    const used = du.images.find(i => i.name === id)?.used_size ?? 0
    return { size: info.size, allocated: used }
  }

  async exists (id: string): Promise<boolean> {
    checkId(id)
    return (await this.infoOrNull(id)) !== null
  }

  async createReadStream (id: string, range: ReadRange = {}): Promise<Readable> {
    checkId(id)
    const start = range.start ?? 0
    assertSize(start, 'start')
    if (range.end !== undefined) {
      assertSize(range.end, 'end')
      if (range.end < start) throw new RangeError(`end (${range.end}) is before start (${start})`)
    }
    const info = await this.info(id)
    const stop = Math.min(info.size, range.end === undefined ? info.size : range.end + 1) // exclusive
    if (stop <= start) return Readable.from([])
    return Readable.from(this.readRange(id, start, stop), { objectMode: false, highWaterMark: MiB })
  }

  /** Bytes [start, stop) of the image, from `rbd export-diff`, holes as zeros. */
  private async * readRange (id: string, start: number, stop: number): AsyncGenerator<Buffer> {
    const child = this.spawnRbd(['export-diff', '--no-progress', this.spec(id), '-'], ['ignore', 'pipe', 'pipe'])
    let stderr = ''
    child.stderr?.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 16384) stderr += d })
    const exited = new Promise<number | null>((resolve) => {
      child.on('close', (code) => resolve(code))
      child.on('error', () => resolve(-1))
    })
    const zeros = Buffer.alloc(MiB)
    let pos = start
    // zeros for [pos, upTo)
    const zerosTo = function * (upTo: number): Generator<Buffer> {
      while (pos < upTo) {
        const n = Math.min(zeros.length, upTo - pos)
        pos += n
        yield zeros.subarray(0, n)
      }
    }
    let finished = false
    try {
      const reader = new PullReader(child.stdout![Symbol.asyncIterator]() as AsyncIterator<Buffer>)
      const header = await reader.take(DIFF_HEADER.length)
      if (!header.equals(DIFF_HEADER)) throw new StorageError('IO', `read ${id}: not an rbd diff stream`)
      for (;;) {
        const tag = (await reader.take(1)).toString('latin1')
        if (tag === 'e') break
        if (tag === 'f' || tag === 't') {
          const len = (await reader.take(4)).readUInt32LE(0)
          await reader.take(len)
        } else if (tag === 's') {
          await reader.take(8)
        } else if (tag === 'w' || tag === 'z') {
          const head = await reader.take(16)
          const off = Number(head.readBigUInt64LE(0))
          const len = Number(head.readBigUInt64LE(8))
          if (off > pos) yield * zerosTo(Math.min(off, stop))
          let cur = off
          let left = len
          while (left > 0) {
            const chunk = tag === 'w' ? await reader.some(Math.min(left, 4 * MiB)) : zeros.subarray(0, Math.min(left, zeros.length))
            const a = Math.max(cur, pos)
            const b = Math.min(cur + chunk.length, stop)
            if (b > a) {
              pos = b
              yield chunk.subarray(a - cur, b - cur)
            }
            cur += chunk.length
            left -= chunk.length
            if (pos >= stop) break
          }
          if (pos >= stop) break
        } else {
          throw new StorageError('IO', `read ${id}: unknown rbd diff record ${JSON.stringify(tag)}`)
        }
      }
      if (pos < stop) {
        // the diff ends at the last allocated extent: the rest is a hole
        const code = await exited
        if (code !== 0) throw rbdError(code, stderr, `read ${id}`)
        yield * zerosTo(stop)
      }
      finished = true
    } catch (err) {
      if (err instanceof StorageError && err.message.endsWith('ended early')) {
        const code = await exited
        if (code !== 0) throw rbdError(code, stderr, `read ${id}`)
      }
      throw err
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      if (!finished) child.stdout?.destroy()
    }
  }

  async openForWrite (id: string): Promise<RbdDriveWriter> {
    checkId(id)
    const info = await this.info(id)
    return new RbdDriveWriter(this, id, info.size)
  }

  /** A running `rbd import-diff - <img>`: write records to stdin, then end() and await exit. */
  startImport (id: string): { child: ChildProcess, done: Promise<void> } {
    const child = this.spawnRbd(['import-diff', '--no-progress', '-', this.spec(id)], ['pipe', 'ignore', 'pipe'])
    let stderr = ''
    child.stderr?.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 16384) stderr += d })
    // EPIPE when rbd dies early is reported through its exit status below
    child.stdin?.on('error', () => {})
    const done = new Promise<void>((resolve, reject) => {
      let spawnError: Error | undefined
      child.on('error', (e) => { spawnError = e })
      child.on('close', (code) => {
        if (spawnError !== undefined) reject(new StorageError('UNAVAILABLE', `write ${id}: cannot run rbd: ${spawnError.message}`))
        else if (code === 0) resolve()
        else reject(this.exitError(code, stderr, `write ${id}`))
      })
    })
    child.stdin?.write(DIFF_HEADER)
    return { child, done }
  }

  async createWriteStream (id: string, options: WriteStreamOptions = {}): Promise<Writable> {
    const start = options.start ?? 0
    assertSize(start, 'start')
    const writer = await this.openForWrite(id)
    if (start > writer.size) throw new RangeError(`start ${start} is past the end of drive ${id} (size ${writer.size})`)
    let pos = start
    return gatheringWritable({
      writeMany: async (bufs, len) => {
        await writer.writev(bufs, pos)
        pos += len
      },
      // the pipe to rbd may still hold them: releasesBuffers stays false
      written: options.written,
      final: () => writer.close(),
      abandon: async () => { writer.abandon() }
    })
  }

  // --- deletion, snapshots, clones ---------------------------------------------------------

  private async snapshots (name: string): Promise<Array<{ name: string, protected: string }>> {
    return await this.json(['snap', 'ls', this.spec(name)], `snap ls ${name}`)
  }

  private async hasChildren (name: string, snap: string): Promise<boolean> {
    const children = await this.json<unknown[]>(['children', `${this.spec(name)}@${snap}`], `children ${name}@${snap}`)
    return children.length > 0
  }

  /** Removes `name@snap` if no child uses it (unprotecting a format-1-style protected snapshot). */
  private async removeSnapIfUnused (name: string, snap: string, isProtected: boolean): Promise<boolean> {
    let children: boolean
    try {
      children = await this.hasChildren(name, snap)
    } catch (err) {
      // the snapshot (or its image) was removed meanwhile, by another remover
      if (isStorageError(err, 'NOT_FOUND')) return true
      throw err
    }
    if (children) return false
    if (isProtected) await this.run(['snap', 'unprotect', `${this.spec(name)}@${snap}`], `snap unprotect ${name}@${snap}`)
    await this.run(['snap', 'rm', '--no-progress', `${this.spec(name)}@${snap}`], `snap rm ${name}@${snap}`).catch((err: unknown) => {
      if (!(err instanceof StorageError && err.code === 'NOT_FOUND')) throw err
    })
    return true
  }

  /**
   * Removes image `name`, or hides it (rename) while children still depend on one of its
   * snapshots. Then lets its parent go if this was the parent's last child. False: there was no
   * such image.
   */
  private async removeImage (name: string, options: RemoveOptions = {}): Promise<boolean> {
    // One removal of an image at a time in this process (a stale attempt's cleanup of its partial
    // image and a newer attempt's removal of the same partial, in one process): two `rbd rm` of one
    // image at once can leave the later one waiting for the image's lock without end (Ceph 16,
    // seen once in 15 tries). 'leave' leaves an image that is being removed to its remover.
    for (let running = this.removing.get(name); running !== undefined; running = this.removing.get(name)) {
      if (options.busy === 'leave') return true
      await running.catch(() => {})
    }
    const removal = this.removeImageNow(name, options)
    this.removing.set(name, removal)
    try {
      return await removal
    } finally {
      if (this.removing.get(name) === removal) this.removing.delete(name)
    }
  }

  private async removeImageNow (name: string, options: RemoveOptions): Promise<boolean> {
    const { guard } = options
    const info = await this.infoOrNull(name)
    if (info === null) return false
    const parent = info.parent ?? (options.markedParent === true ? await this.markedParent(name, info) : undefined)
    let kept = 0
    try {
      for (const s of await this.snapshots(name)) {
        if (!await this.removeSnapIfUnused(name, s.name, s.protected === 'true')) kept++
      }
      if (kept > 0) {
        if (!name.startsWith(HIDDEN_PREFIX)) {
          const hidden = `${HIDDEN_PREFIX}${name}.${randomBytes(4).toString('hex')}`
          await this.run(['rename', this.spec(name), this.spec(hidden)], `rename ${name}`, { guard })
        }
        return true
      }
    } catch (err) {
      // the image went since its info was read: another remover (another process) removed it
      if (isStorageError(err, 'NOT_FOUND') && await this.infoOrNull(name) === null) return true
      throw err
    }
    // whether another remover (another process) removed the image while this one tried
    let raced = false
    // a client that died holding the image leaves its watch for ~30 s (osd_client_watch_timeout)
    for (let tries = 0; ; tries++) {
      try {
        raced = await this.rmImage(name, info.id, guard)
        break
      } catch (err) {
        if (err instanceof StorageError && err.code === 'NOT_FOUND') break
        // another remover (another process) moved the image out of the pool first: this rm fails
        // (Ceph 16: ESTALE, "error setting trash image state", 8 in 30 tries of two at once); the
        // removal is done when the other's is
        if (isStorageError(err, 'IO') && await this.infoOrNull(name) === null && await this.waitGone(info.id)) {
          raced = true
          break
        }
        if (!(err instanceof StorageError && /still has watchers/.test(err.message))) throw err
        // 'leave': an image still open elsewhere (a stale attempt's live copy) stays to its owner
        if (options.busy === 'leave') return true
        if (tries >= 45) throw err
        await new Promise(resolve => setTimeout(resolve, 1000))
      }
    }
    // an `rbd rm` cut short or failed so may leave the name in the pool's directory with no image
    // behind it, for ever (a run of the RBD tests left two such names; which step left them was not
    // caught again: 25 pairs of removals at once, 6 of them failing with ESTALE, left none)
    if (raced) await this.removeEntry(name, guard)
    if (parent) await this.releaseParent(parent)
    return true
  }

  /**
   * The parent that image `name`'s own flatten mark names: its flatten detached it and then failed
   * before letting that parent go, and its job did not finish it (see resumeFlatten).
   */
  private async markedParent (name: string, info: ImageInfo): Promise<ImageInfo['parent']> {
    const mark = await this.flattenMark(name)
    return mark?.id === info.id ? this.parentOfMark(mark) : undefined
  }

  /** The parent a flatten mark names, as `rbd info` gives one (its name is not needed: found by id). */
  private parentOfMark (mark: FlattenMark): ImageInfo['parent'] {
    return mark.parent === undefined ? undefined : { pool: this.pool, image: '', id: mark.parent.id, snapshot: mark.parent.snapshot }
  }

  /**
   * Removes a name the pool's directory lists with no image behind it (no header): `rbd rm` of it
   * removes just that entry. Nothing there (NOT_FOUND) is done too.
   */
  private async removeEntry (name: string, guard: StorageGuard | undefined): Promise<void> {
    await this.run(['rm', '--no-progress', this.spec(name)], `rm ${name}`, { guard }).catch((err: unknown) => {
      if (!isStorageError(err, 'NOT_FOUND')) throw err
    })
  }

  /**
   * `rbd rm` of image `name` (id `id`). Two removals of one image at once in two processes can
   * leave the later one waiting for the image's lock without end after the other removed it (Ceph
   * 16: "watcher not registered - delaying request"). So while it runs, every removalCheckMs it
   * looks whether the image is gone: no header under its id, and not in the pool's trash, where a
   * removal under way (this one's included) keeps the image until its last object is gone. Gone,
   * the process is ended and the removal is done; a removal still at work is never cut short.
   * True when it was ended so (another remover removed the image).
   */
  private async rmImage (name: string, id: string, guard: StorageGuard | undefined): Promise<boolean> {
    const gone = new AbortController()
    let running = true
    let timer: NodeJS.Timeout | undefined
    const check = async (): Promise<void> => {
      try {
        if (await this.goneEverywhere(id)) { gone.abort(); return }
      } catch {
        // the cluster did not answer the check: the removal goes on, and is looked at again
      }
      if (running) timer = setTimeout(() => { void check() }, this.removalCheckMs)
    }
    timer = setTimeout(() => { void check() }, this.removalCheckMs)
    try {
      await this.run(['rm', '--no-progress', this.spec(name)], `rm ${name}`, { long: true, guard, signal: gone.signal })
      return false
    } catch (err) {
      if (gone.signal.aborted && isStorageError(err, 'ABORTED')) return true
      throw err
    } finally {
      running = false
      clearTimeout(timer)
    }
  }

  /** Whether the image of id `id` is gone everywhere within about a minute (another remover's work). */
  private async waitGone (id: string): Promise<boolean> {
    const deadline = Date.now() + 60_000
    for (;;) {
      if (await this.goneEverywhere(id)) return true
      if (Date.now() >= deadline) return false
      await new Promise(resolve => setTimeout(resolve, Math.min(this.removalCheckMs, 1000)))
    }
  }

  /** The image of id `id` (hidden or not, or in the trash), by its header; null when it has none. */
  private async infoByIdOrNull (id: string): Promise<ImageInfo | null> {
    return await this.json<ImageInfo>(['info', '--pool', this.pool, '--image-id', id], `info ${id}`).catch((err: unknown) => {
      if (isStorageError(err, 'NOT_FOUND')) return null
      throw err
    })
  }

  /** Whether the image of id `id` is removed to its last step: no header, no entry in the trash. */
  private async goneEverywhere (id: string): Promise<boolean> {
    if (await this.infoByIdOrNull(id) !== null) return false
    const trash = await this.json<Array<{ id: string }>>(['trash', 'ls', '--all', this.pool], `trash ls ${this.pool}`)
    return !trash.some(entry => entry.id === id)
  }

  /** After a child left `parent` (flattened or removed): drop its snapshot, and a hidden parent with it. */
  private async releaseParent (parent: NonNullable<ImageInfo['parent']>): Promise<void> {
    if (parent.pool !== this.pool) return
    // the parent may have been renamed (hidden) since: find it by its id. Gone, there is nothing to
    // let go; a cluster that does not answer fails the release (it is retried, not skipped)
    const byId = await this.infoByIdOrNull(parent.id)
    if (byId === null) return
    const name = byId.name
    const snaps = await this.snapshots(name).catch((err: unknown) => {
      // removed since its header was read (another remover)
      if (isStorageError(err, 'NOT_FOUND')) return []
      throw err
    })
    const snap = snaps.find(s => s.name === parent.snapshot)
    if (snap) await this.removeSnapIfUnused(name, snap.name, snap.protected === 'true')
    if (name.startsWith(HIDDEN_PREFIX)) await this.removeImage(name)
  }

  async delete (id: string, guard?: StorageGuard): Promise<void> {
    checkId(id)
    const names = await this.poolNames()
    await this.removePartials(id, undefined, names)
    // the guard before each step that makes the image go (hiding it, each try of its removal)
    // with hidden parents in the pool, a flattened image's mark may name one its flatten could not
    // let go (one `image-meta get`; none while no image is hidden)
    const found = await this.removeImage(id, { guard, markedParent: names.some(n => n.startsWith(HIDDEN_PREFIX)) })
    if (found) return
    // listed but no image: a name left in the pool's directory (see removeImageNow)
    if (names.includes(id)) await this.removeEntry(id, guard)
    // gone already: this may be the retry of a removal that failed after the image went and before
    // its parent was let go (the cluster did not answer), which would leave a hidden parent whose
    // last child is gone, and the snapshot the child had of it, for ever
    await this.releaseHiddenParents(id, names)
  }

  /**
   * The hidden parents (deleted drives kept for their children) that still hold a snapshot made
   * for a child `id` (`c-<id>`, or `c-<id>.<attempt>` of a copy's partial image): the snapshots no
   * child uses any more go, and the image once none is left (one still open elsewhere is left).
   * `names`: the pool's images, as the delete listed them for its partials.
   */
  private async releaseHiddenParents (id: string, names: string[]): Promise<void> {
    for (const name of names) {
      if (!name.startsWith(HIDDEN_PREFIX)) continue
      const snaps = await this.snapshots(name).catch((err: unknown) => {
        if (isStorageError(err, 'NOT_FOUND')) return []
        throw err
      })
      if (snaps.some(s => s.name === `c-${id}` || s.name.startsWith(`c-${id}.`))) await this.removeImage(name, { busy: 'leave' })
    }
  }

  /** The names of the pool's images (`rbd ls`). */
  private async poolNames (): Promise<string[]> {
    return await this.json<string[]>(['ls', this.pool], `ls ${this.pool}`)
  }

  /** The partial image of a copy to `id`: one per attempt of the copying job, so attempts never share one. */
  private partialName (id: string, attempt?: number): string {
    return attempt === undefined ? `${id}.partial` : `${id}.partial.${attempt}`
  }

  /**
   * Removes the partial images of copies to `id`: every attempt's (a delete), or those of attempts
   * before `before` (a copy; never a newer attempt's: a stale attempt starting late must not remove
   * the live copy). A copy leaves an earlier attempt's partial that is still open (a stale attempt
   * flattening it in another process): that attempt removes it when its fence refuses it, and a
   * delete of the drive removes whatever is left. `names`: the pool's images, when listed already.
   */
  private async removePartials (id: string, before?: number, names?: string[]): Promise<void> {
    const prefix = `${id}.partial`
    names ??= await this.poolNames()
    for (const name of names) {
      if (!name.startsWith(prefix)) continue
      const rest = name.slice(prefix.length)
      const older = rest === '' || (/^\.\d+$/.test(rest) && (before === undefined || Number(rest.slice(1)) < before))
      if (older) await this.removeImage(name, { busy: before === undefined ? 'wait' : 'leave' })
    }
  }

  /**
   * The snapshots of `srcId` that earlier attempts of a copy to `dstId` made (`c-<dstId>.<k>`,
   * k < `attempt`) and no child uses any more: an attempt whose flatten detached its partial
   * image but could not let the snapshot go (the cluster not answering) failed, and its partial
   * went without it. One still in use (a stale attempt's partial in another process) is kept.
   */
  private async releaseEarlierSnapshots (srcId: string, dstId: string, attempt: number): Promise<void> {
    const prefix = `c-${dstId}.`
    for (const s of await this.snapshots(srcId)) {
      if (!s.name.startsWith(prefix)) continue
      const k = s.name.slice(prefix.length)
      if (/^\d+$/.test(k) && Number(k) < attempt) await this.removeSnapIfUnused(srcId, s.name, s.protected === 'true')
    }
  }

  /**
   * Makes `dstId` a copy-on-write child of a new snapshot `c-<dstId>` of `srcId`, extended to
   * `size` if larger. Takes well under a second whatever the size. An existing `dstId` that is
   * already that child is kept (a rerun); any other existing `dstId` is 'EXISTS'.
   */
  async cloneCow (srcId: string, dstId: string, options: CowCloneOptions = {}): Promise<void> {
    checkId(srcId)
    checkId(dstId)
    if (srcId === dstId) throw new StorageError('INVALID_ID', `cannot clone drive ${srcId} onto itself`)
    if (options.size !== undefined) assertSize(options.size)
    await this.cloneTo(srcId, dstId, `c-${dstId}`, options.size)
  }

  /** Makes `target` a child of a new snapshot `snap` of `srcId` (see cloneCow). */
  private async cloneTo (srcId: string, target: string, snap: string, size: number | undefined): Promise<void> {
    // the common case in two calls (snap create, clone); an existing target is looked at only then
    await this.run(['snap', 'create', '--no-progress', `${this.spec(srcId)}@${snap}`], `snap create ${srcId}`).catch((err: unknown) => {
      // a snapshot left by an interrupted attempt is reused
      if (!(err instanceof StorageError && err.code === 'EXISTS')) throw err
    })
    let info: ImageInfo | undefined
    try {
      await this.run(['clone', '--rbd-default-clone-format', '2', `${this.spec(srcId)}@${snap}`, this.spec(target)], `clone ${srcId}`)
    } catch (err) {
      if (err instanceof StorageError && err.code === 'EXISTS') {
        info = await this.info(target)
        // a rerun: the target already is this clone
        if (info.parent?.snapshot !== snap) {
          await this.removeSnapIfUnused(srcId, snap, false).catch(() => {})
          throw new StorageError('EXISTS', `drive ${target} already exists`)
        }
      } else {
        await this.removeSnapIfUnused(srcId, snap, false).catch(() => {})
        throw err
      }
    }
    if (size !== undefined) {
      info ??= await this.info(target)
      if (size > info.size) await this.run(['resize', '--no-progress', '--size', `${size}B`, this.spec(target)], `resize ${target}`)
    }
  }

  /**
   * Copies the parent's data into clone `id` so it no longer depends on it, then drops the
   * parent snapshot (and a deleted parent with its last child). Progress is in bytes of the
   * image's nominal size. Abort kills `rbd flatten`: the image stays a valid child.
   */
  async flatten (id: string, options: FlattenOptions = {}): Promise<void> {
    checkId(id)
    try {
      await this.flattenImage(id, id, options.signal, options.onProgress)
    } catch (err) {
      throw err instanceof ProgressCallbackError ? err.inner : err
    }
  }

  private async flattenImage (name: string, id: string, signal: AbortSignal | undefined, onProgress: CopyProgress | undefined, total?: number): Promise<void> {
    const info = await this.info(name)
    const bytes = total ?? info.size
    const progress = new Progress(bytes, onProgress, this.progressIntervalMs)
    progress.report(0, true)
    if (info.parent) {
      if (isAborted(signal)) throw abortedError(id, signal?.reason)
      const turnedOff = await this.prepareFlatten(name, info)
      if (isAborted(signal)) throw abortedError(id, signal?.reason)
      let failure: unknown
      const controller = new AbortController()
      const onAbort = (): void => controller.abort(signal?.reason)
      signal?.addEventListener('abort', onAbort, { once: true })
      try {
        const onStderr = (text: string): void => {
          const all = [...text.matchAll(/(\d+)% complete/g)]
          const pct = all.length > 0 ? Number(all[all.length - 1][1]) : undefined
          if (pct === undefined || failure !== undefined) return
          try {
            progress.report(Math.floor(bytes * pct / 100))
          } catch (err) {
            failure = err
            controller.abort(err)
          }
        }
        await this.run(['flatten', this.spec(name)], `flatten ${id}`, { signal: controller.signal, long: true, onStderr })
      } catch (err) {
        if (failure instanceof ProgressCallbackError) throw failure
        if (err instanceof StorageError && err.code === 'ABORTED') throw abortedError(id, signal?.reason)
        throw err
      } finally {
        signal?.removeEventListener('abort', onAbort)
      }
      await this.finishFlatten(name, turnedOff, info.parent)
    } else {
      await this.resumeFlatten(name, info)
    }
    progress.report(bytes, true)
  }

  /**
   * Before `rbd flatten`: makes sure it copies every object if an earlier flatten was cut.
   *
   * librbd's copy-up records an object as existing in the object map (persisted) *before* its
   * data is written, and `rbd flatten` skips every object the map says exists. A flatten cut in
   * between (its service SIGKILLed, its process SIGTERMed on cancel) leaves objects recorded but
   * never written: the next flatten skips them, detaches the parent, and they read as zeros.
   * (`rbd object-map rebuild` does not clear such an entry on a clone in Ceph 16.2.15.) So each
   * flatten marks the image first (FLATTEN_MARK); finding its own mark means an earlier one did
   * not finish, and this one runs with the object map off (`feature disable`), so it copies up
   * every object the child lacks. Returns the features to turn back on afterwards.
   */
  private async prepareFlatten (name: string, info: ImageInfo): Promise<string[]> {
    const found = await this.flattenMark(name)
    const own = found?.id === info.id ? found : undefined
    // the snapshot to let go once flattened, kept in the mark until it is (resumeFlatten)
    const parent = info.parent !== undefined && info.parent.pool === this.pool ? { id: info.parent.id, snapshot: info.parent.snapshot } : undefined
    if (own === undefined) {
      await this.setFlattenMark(name, { id: info.id, ...(parent ? { parent } : {}) })
      return []
    }
    const features = info.features ?? []
    const on = ['fast-diff', 'object-map'].filter(f => features.includes(f))
    // no object map (and none turned off before): nothing is skipped
    const turnOff = own.off ?? (on.length > 0 ? on : undefined)
    const mark = { id: info.id, ...(turnOff ? { off: turnOff } : {}), ...(parent ? { parent } : {}) }
    if (flattenMarkValue(mark) !== flattenMarkValue(own)) await this.setFlattenMark(name, mark)
    if (on.length > 0) await this.run(['feature', 'disable', this.spec(name), ...on], `feature disable ${name}`)
    return turnOff ?? []
  }

  /** The image's own or inherited FLATTEN_MARK, or undefined. */
  private async flattenMark (name: string): Promise<FlattenMark | undefined> {
    try {
      return parseFlattenMark((await this.run(['image-meta', 'get', this.spec(name), FLATTEN_MARK], `image-meta get ${name}`)).trim())
    } catch (err) {
      if (err instanceof StorageError && err.code === 'NOT_FOUND') return undefined
      throw err
    }
  }

  private async setFlattenMark (name: string, mark: FlattenMark): Promise<void> {
    await this.run(['image-meta', 'set', this.spec(name), FLATTEN_MARK, flattenMarkValue(mark)], `image-meta set ${name}`)
  }

  /**
   * After a successful flatten: the object map back on (rebuilt) if it was turned off, the parent
   * let go (its snapshot, and a hidden parent with its last child), then the mark gone. A failure
   * in between leaves the mark, so the retry (resumeFlatten) does what is left.
   */
  private async finishFlatten (name: string, turnedOff: string[], parent: ImageInfo['parent'] | undefined, features?: string[]): Promise<void> {
    const enable = turnedOff.filter(f => features === undefined || !features.includes(f))
    if (enable.length > 0) {
      // object-map before fast-diff, which needs it
      await this.run(['feature', 'enable', this.spec(name), ...[...enable].sort().reverse()], `feature enable ${name}`)
    }
    if (turnedOff.length > 0) await this.run(['object-map', 'rebuild', '--no-progress', this.spec(name)], `object-map rebuild ${name}`, { long: true })
    if (parent !== undefined) await this.releaseParent(parent)
    await this.run(['image-meta', 'remove', this.spec(name), FLATTEN_MARK], `image-meta remove ${name}`).catch((err: unknown) => {
      if (!(err instanceof StorageError && err.code === 'NOT_FOUND')) throw err
    })
  }

  /**
   * A flatten of an image no longer a clone: an earlier flatten detached it but failed in its last
   * steps (the cluster not answering), which its own mark says. Those steps run now: without
   * them a parent's snapshot made for this image stayed, and a hidden parent (a deleted drive kept
   * for its clones) with it for ever, or the object map stayed off. One `image-meta get`.
   */
  private async resumeFlatten (name: string, info: ImageInfo): Promise<void> {
    const mark = await this.flattenMark(name)
    if (mark?.id !== info.id) return
    await this.finishFlatten(name, mark.off ?? [], this.parentOfMark(mark), info.features ?? [])
  }

  /** Whether `id` still depends on a parent image (a CoW clone not yet flattened). */
  async isClone (id: string): Promise<boolean> {
    checkId(id)
    return (await this.info(id)).parent !== undefined
  }

  async copy (srcId: string, dstId: string, options: CopyOptions = {}): Promise<void> {
    checkId(srcId)
    checkId(dstId)
    if (srcId === dstId) throw new StorageError('INVALID_ID', `cannot copy drive ${srcId} onto itself`)
    if (options.size !== undefined) assertSize(options.size)
    const { signal } = options
    if (signal?.aborted === true) throw abortedError(dstId, signal.reason)
    const { attempt } = options
    if (attempt !== undefined && (!Number.isSafeInteger(attempt) || attempt < 1)) throw new RangeError(`attempt must be a positive integer, got ${attempt}`)
    const partial = this.partialName(dstId, attempt)
    // one copy per partial image: a newer attempt (a takeover in this same process) has its own
    if (this.copying.has(partial)) throw new StorageError('EXISTS', `a copy to drive ${dstId} is already running`)
    this.copying.add(partial)
    try {
      options.onMethod?.('rbd clone + flatten')
      // the data to copy, never more than the image's size (the local backend's bound too)
      const st = await this.stat(srcId)
      const total = Math.min(st.allocated, st.size)
      // Partial images of earlier attempts (crash, kill -9, a stale attempt still copying in another
      // process) are simply discarded; a newer attempt's is left alone. A first attempt has no
      // earlier one: only its own name is looked at (one call, as before attempts were named).
      if (attempt === undefined || attempt === 1) await this.removeImage(partial)
      else {
        await this.removePartials(dstId, attempt + 1)
        await this.releaseEarlierSnapshots(srcId, dstId, attempt)
      }
      try {
        const t0 = performance.now()
        await this.cloneTo(srcId, partial, attempt === undefined ? `c-${dstId}` : `c-${dstId}.${attempt}`, options.size)
        await this.flattenImage(partial, dstId, signal, options.onProgress, total)
        const t1 = performance.now()
        if (isAborted(signal)) throw abortedError(dstId, signal?.reason)
        const { guard } = options
        const commit = async (): Promise<void> => {
          // the caller's guard before each step that replaces the destination
          await this.removeImage(dstId, { guard })
          await this.run(['rename', this.spec(partial), this.spec(dstId)], `rename ${partial}`, { guard })
        }
        // fenced (the job layer's guard): replaced only while the copying attempt still owns its job
        if (options.fenced === undefined) await commit()
        else await options.fenced(commit)
        // librbd writes are durable when acknowledged: no separate sync step
        options.onStats?.({ method: 'rbd clone + flatten', bytes: total, copyMs: t1 - t0, fsyncMs: 0, renameMs: performance.now() - t1 })
      } catch (err) {
        await this.removeImage(partial).catch(() => {})
        throw err instanceof ProgressCallbackError ? err.inner : err
      }
    } finally {
      this.copying.delete(partial)
    }
  }
}

/**
 * Positional writer: one `rbd import-diff` process per open period; `sync`/`close` end it
 * and wait for its exit (librbd flushes before exiting), the next write starts another.
 */
export class RbdDriveWriter implements DriveWriter {
  private current: { child: ChildProcess, done: Promise<void> } | undefined
  private closed = false
  private failed: unknown

  constructor (private readonly storage: RbdDriveStorage, private readonly id: string, readonly size: number) {}

  async write (data: Uint8Array, position: number): Promise<void> {
    await this.writev([data], position)
  }

  /** Writes `buffers` back to back from `position`, as one record of the diff stream. */
  async writev (buffers: Uint8Array[], position: number): Promise<void> {
    const len = buffers.reduce((n, b) => n + b.length, 0)
    if (!Number.isSafeInteger(position) || position < 0 || position + len > this.size) {
      throw new RangeError(`write of ${len} bytes at ${String(position)} is outside drive ${this.id} (size ${this.size})`)
    }
    if (this.closed) throw new StorageError('IO', `write ${this.id}: writer is closed`)
    if (this.failed !== undefined) throw this.failed
    if (len === 0) return
    this.current ??= this.storage.startImport(this.id)
    const { child, done } = this.current
    done.catch((err: unknown) => { this.failed ??= err })
    const stdin = child.stdin!
    stdin.write(writeRecordHeader(position, len))
    let ok = true
    for (const b of buffers) ok = stdin.write(b)
    if (!ok) {
      // backpressure: wait for the pipe to drain or the process to fail
      await Promise.race([
        new Promise<void>(resolve => stdin.once('drain', resolve)),
        done.then(() => { throw new StorageError('IO', `write ${this.id}: rbd exited early`) })
      ])
    }
    if (this.failed !== undefined) throw this.failed
  }

  private async finish (): Promise<void> {
    const cur = this.current
    this.current = undefined
    if (cur === undefined) {
      if (this.failed !== undefined) throw this.failed
      return
    }
    cur.child.stdin!.end(Buffer.from('e'))
    await cur.done
  }

  async sync (): Promise<void> {
    await this.finish()
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.finish()
  }

  /** Stops without finishing the stream: data written so far may or may not have landed. */
  abandon (): void {
    this.closed = true
    const cur = this.current
    this.current = undefined
    if (cur) {
      cur.done.catch(() => {})
      // end the stream cleanly: a killed client would leave its watch on the image for ~30 s
      cur.child.stdin!.end(Buffer.from('e'))
      setTimeout(() => { if (cur.child.exitCode === null) cur.child.kill('SIGKILL') }, 10_000).unref()
    }
  }
}
