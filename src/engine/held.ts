// Request-held jobs: a job whose work happens inside HTTP requests (uploads, downloads) rather
// than in a handler. The engine enqueues it parked (so no worker claims it), leases it to this
// process's held-lease owner, heartbeats it with its own jobs (JobEngine.beat), and the handle
// below reports progress and records the outcome. A lost lease commits nothing, and like a claimed
// job's handler the holder is aborted locally (its signal) once its lease can no longer be renewed
// in time (lease minus a margin), whatever PostgreSQL is doing.
import type { FastifyBaseLogger } from 'fastify'
import type { PrismaClient, Tx } from '../db/client.ts'
import { DomainError } from '../domain/errors.ts'
import { etaOf, percentOf } from '../domain/progress.ts'
import { jobChanges } from './cancel.ts'
import { publishChange } from './events.ts'
import { CHANNELS, type PgListener } from './listener.ts'
import { JobLogWriter } from './log.ts'
import { finishJob, lockAttempt, saveCheckpoint, type FinishFields, type TakenJob } from './queue-sql.ts'
import type { InTx } from '../db/sql.ts'

const PROGRESS_INTERVAL_MS = 250

/** Thrown by finish() when the lease is gone: the caller's transaction rolls back. */
export class LeaseLost extends DomainError {
  constructor (jobId: string) {
    super('busy', `The lease of job ${jobId} was lost`)
  }
}

export interface HeldDeps {
  prisma: PrismaClient
  log: FastifyBaseLogger
  /** The lease owner of this process's held jobs. */
  owner: string
  listener?: PgListener
  /** Called when the handle is done (the engine stops heartbeating it). */
  release: (id: string) => void
  /** The lease length, and how long before its end the holder is aborted when it was not renewed. */
  leaseMs: number
  marginMs: number
  /** Local time the statement that took the lease was sent (the lease runs from no later than that). */
  takenAt: number
}

export interface JobFailureRecord { error_type: string, error_message: string }

/** The handle of a request-held job: progress, cancel/lease-loss signal, and the outcome. */
export class HeldJob {
  private readonly controller = new AbortController()
  private readonly unlisten: (() => void) | undefined
  private lastWrite = 0
  private pending: NodeJS.Timeout | undefined
  private bytesDone = 0
  private readonly startedAt = Date.now()
  private finished = false
  /** until when (local clock) the lease is known to hold */
  private leaseEnd: number
  private watchdog: NodeJS.Timeout | undefined
  /** aborted because the lease could not be kept: nothing more is written */
  private stale = false
  private readonly jobLog: JobLogWriter
  private summary: string | undefined
  cancelled = false

  constructor (private readonly deps: HeldDeps, readonly row: TakenJob, private bytesTotal: number | null) {
    this.unlisten = deps.listener?.on(CHANNELS.cancel, (id) => { if (id === row.id) this.cancel() })
    this.leaseEnd = deps.takenAt + deps.leaseMs
    this.arm()
    this.jobLog = new JobLogWriter(() => deps.prisma, { id: row.id, attempt: row.attempts }, deps.owner, (err) => deps.log.warn({ err, job: row.id }, 'held job log write failed'))
  }

  /** (Re)arms the local lease watchdog: it aborts the holder once the lease can no longer be trusted. */
  private arm (): void {
    clearTimeout(this.watchdog)
    if (this.finished || this.stale) return
    this.watchdog = setTimeout(() => {
      this.deps.log.warn({ job: this.row.id, attempt: this.row.attempts }, 'held job aborted: lease could not be renewed in time')
      this.leaseLost()
    }, Math.max(0, this.leaseEnd - this.deps.marginMs - Date.now()))
    this.watchdog.unref()
  }

  /** The engine's heartbeat renewed the lease with a statement sent at `sentAt` (local clock). */
  renewed (sentAt: number): void {
    if (this.stale) return
    this.leaseEnd = Math.max(this.leaseEnd, sentAt + this.deps.leaseMs)
    this.arm()
  }

  /** What the job did, recorded as its description when it succeeds ("received 1.0 GiB in 2.1 s"). */
  describe (text: string): void {
    this.summary = text
  }

  /** Appends a line to the job's log (as ctx.log does for handlers); written at the latest with the outcome. */
  log (line: string): void {
    if (!this.finished && !this.stale) this.jobLog.write(line)
  }

  /**
   * Saves `data` as the job's checkpoint, fenced by this attempt's lease (a worker that takes the
   * job over reads it, as a handler's ctx.checkpoint). Throws LeaseLost when the lease is gone.
   */
  async checkpoint (data: unknown): Promise<void> {
    if (this.stale || this.finished) throw new LeaseLost(this.row.id)
    if (!await saveCheckpoint(this.deps.prisma, this.deps.owner, { id: this.row.id, attempt: this.row.attempts }, data)) throw new LeaseLost(this.row.id)
  }

  /**
   * Runs `fn` in a transaction that holds this attempt's job row locked, as a handler's ctx.fenced:
   * a step put in place inside it (a copy renamed over the drive's image) happens only while this
   * attempt still owns the job. Throws LeaseLost (and aborts the signal) when a newer attempt may exist.
   */
  async fenced<T> (fn: (tx: Tx) => Promise<T>): Promise<T> {
    if (this.stale || this.finished) throw new LeaseLost(this.row.id)
    const key = { id: this.row.id, attempt: this.row.attempts }
    return this.deps.prisma.$transaction(async (tx) => {
      if (!await lockAttempt(tx, this.deps.owner, key, this.deps.marginMs / 1000)) {
        this.leaseLost()
        throw new LeaseLost(this.row.id)
      }
      return fn(tx)
    }, { timeout: Math.max(1000, this.deps.leaseMs - this.deps.marginMs) })
  }

  /**
   * As a handler's ctx.guard: the last check, synchronous, before a storage step nothing undoes
   * (a copy renamed over the drive's image). Throws LeaseLost (and aborts the signal) when the
   * lease is gone, or by this process's clock within the margin of its end: a request held up
   * inside `fenced` past its lease resumes before its watchdog's timer runs.
   */
  guard (): void {
    if (this.stale || this.finished) throw new LeaseLost(this.row.id)
    if (Date.now() < this.leaseEnd - this.deps.marginMs) return
    this.deps.log.warn({ job: this.row.id, attempt: this.row.attempts }, 'held job aborted: its lease ran out before an irreversible storage step')
    this.leaseLost()
    throw new LeaseLost(this.row.id)
  }

  /** The lease was lost (or the process is crashing): the job may belong to a newer attempt now. */
  get leaseGone (): boolean { return this.stale }

  get id (): string { return this.row.id }
  get signal (): AbortSignal { return this.controller.signal }

  /** The engine's heartbeat found a cancel request. */
  cancel (): void {
    if (this.controller.signal.aborted) return
    this.cancelled = true
    this.controller.abort(new DomainError('validation', 'The job was cancelled'))
  }

  /**
   * The engine's heartbeat found the lease gone, or the watchdog or the guard found it not renewed
   * in time. The engine stops renewing it at once: the row may still be leased here (renewals were
   * only late), and a lease renewed for a holder that gave up would keep the job `started` with
   * nobody to finish it; it runs out, and a worker takes the job over.
   */
  leaseLost (): void {
    this.stale = true
    this.stop()
    if (!this.controller.signal.aborted) this.controller.abort(new LeaseLost(this.row.id))
  }

  /** Bytes moved so far (throttled to a few database writes per second). */
  progress (bytesDone: number, bytesTotal?: number): void {
    this.bytesDone = bytesDone
    if (bytesTotal !== undefined) this.bytesTotal = bytesTotal
    const wait = PROGRESS_INTERVAL_MS - (Date.now() - this.lastWrite)
    if (wait <= 0) this.writeProgress()
    else if (!this.pending) {
      this.pending = setTimeout(() => { this.pending = undefined; this.writeProgress() }, wait)
      this.pending.unref()
    }
  }

  private writeProgress (): void {
    if (this.finished || this.stale) return
    this.lastWrite = Date.now()
    const done = this.bytesDone
    const total = this.bytesTotal
    const eta = etaOf(done, total, (Date.now() - this.startedAt) / 1000) ?? null
    const { prisma, owner } = this.deps
    prisma.job.updateMany({
      where: { id: this.row.id, lockedBy: owner, attempts: this.row.attempts },
      data: {
        bytesDone: BigInt(done),
        ...(total !== null ? { bytesTotal: BigInt(total), progress: percentOf(done, total) } : {}),
        etaSeconds: eta,
        lastModified: new Date()
      }
    }).then(r => r.count > 0 ? publishChange(prisma, jobChanges([this.row])) : undefined)
      .catch(err => this.deps.log.warn({ err, job: this.row.id }, 'held job progress write failed'))
  }

  private stop (): void {
    if (this.finished) return
    this.finished = true
    clearTimeout(this.pending)
    clearTimeout(this.watchdog)
    this.unlisten?.()
    this.deps.release(this.row.id)
  }

  /**
   * Records the outcome inside `tx`, with the domain change that goes with it. finishJob publishes
   * the change; when the lease was lost it throws LeaseLost, so `tx` commits nothing.
   */
  async finish (tx: InTx, fields: FinishFields): Promise<void> {
    // aborted for want of a lease: whether or not the row would still take it, it is not ours to record
    if (this.stale) {
      this.stop()
      throw new LeaseLost(this.row.id)
    }
    // the log's last lines commit with the outcome (they are fenced by the lease finishJob ends)
    if (fields.state !== 'success') this.jobLog.write(`${fields.state === 'cancelled' ? 'cancelled' : 'failed'}: ${fields.error?.error_message ?? 'unknown error'}`)
    const lines = this.jobLog.take()
    this.stop()
    const described = fields.state === 'success' && this.summary !== undefined ? { ...fields, description: this.summary } : fields
    // one statement: the outcome, the description of what was done and the last lines
    const done = await finishJob(tx, this.deps.owner, { id: this.row.id, attempt: this.row.attempts }, described, await lines)
    if (!done) throw new LeaseLost(this.row.id)
  }

  /**
   * Records a failure inside `tx`, with the undoing that goes with it (as finish: LeaseLost when
   * the lease is gone, and `tx` commits nothing). A cancelled job is recorded as cancelled.
   */
  async failIn (tx: InTx, error: JobFailureRecord): Promise<void> {
    if (this.cancelled) await this.finish(tx, { state: 'cancelled', error: { error_type: 'cancelled', error_message: 'The job was cancelled' } })
    else await this.finish(tx, { state: 'error', error })
  }

  /** Records a failure (its own transaction); never throws. False if it could not be recorded. */
  async fail (error: JobFailureRecord): Promise<boolean> {
    try {
      await this.deps.prisma.$transaction(async (tx) => this.failIn(tx, error))
      return true
    } catch (e) {
      this.deps.log.error({ err: e, job: this.row.id }, 'could not record the end of a held job')
      return false
    }
  }

  /**
   * Gives the job up without recording anything, when its undoing could not be done: heartbeats
   * stop, the lease runs out, and a worker takes the job over, whose handler's cleanup undoes what
   * the holder made (as if this process had died).
   */
  abandon (): void {
    this.deps.log.warn({ job: this.row.id }, 'held job abandoned: a worker takes it over once its lease runs out')
    this.stop()
  }
}
