// The job runner: claims jobs from PostgreSQL, holds their lease by heartbeat, runs the handler
// of each operation with an abort signal, settles parents once their children are done, and
// records and publishes every outcome.
import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import type { FastifyBaseLogger } from 'fastify'
import pg from 'pg'
import { keepCheckedOutErrors, type PrismaClient } from '../db/client.ts'
import { etaOf, formatBytes, percentOf } from '../domain/progress.ts'
import { publishChange } from './events.ts'
import { jobChanges, requestCancel } from './cancel.ts'
import { CHANNELS, type PgListener } from './listener.ts'
import { childOutcome, claimJobs, unclaimJobs, fenceLease, finishJob, finishJobs, heartbeat, lockAttempt, lockJob, releaseJobs, renewLease, retryJob, saveCheckpoint, startAncestors, takeJob, type ClaimedRow, type Finish, type FinishedRow, type FinishFields, type LeaseKey, type PendingLine, type TakenJob } from './queue-sql.ts'
import type { InTx, Sql } from '../db/sql.ts'
import type { Tx } from '../db/client.ts'
import { transientDatabaseError } from '../db/transient.ts'
import { sessionUrl } from '../db/session.ts'
import { enqueueJob, type EnqueueInput } from './enqueue.ts'
import { HeldJob, LeaseLost } from './held.ts'
import { JobLogWriter } from './log.ts'
import { IncompleteParams, JobFailure, type CleanupReason, type JobContext, type JobHandler, type JobInfo, type ProgressUpdate } from './types.ts'

/** Hooks for the metrics module; the engine works without them. */
export interface EngineMetrics {
  claimed: (operation: string, latencyMs: number) => void
  finished: (operation: string, state: string, seconds: number) => void
}

export interface EngineOptions {
  prisma: PrismaClient
  /**
   * With it the engine opens its own small `pg` pool for its hot statements (claim, heartbeat,
   * finish) instead of going through Prisma's raw-query path.
   */
  databaseUrl?: string
  log: FastifyBaseLogger
  concurrency: number
  leaseSeconds: number
  /** LISTEN connection: wakes the poller on new work and aborts cancelled jobs at once. */
  listener?: PgListener
  metrics?: EngineMetrics
  /** How often an idle worker looks for work (NOTIFY wakes it sooner). */
  pollMs?: number
  /** How often progress may be written per job. */
  progressIntervalMs?: number
  /** How often a long job logs a progress line. */
  progressLogMs?: number
  /** How often leases are renewed (default: a third of the lease, at most every second). */
  heartbeatMs?: number
  /**
   * A handler is aborted this long before its lease would run out unrenewed, so it stops before
   * another process may take the job over (default: a third of the lease, at most 5 s).
   */
  leaseMarginMs?: number
  /**
   * At most this many claimed jobs wait here for a free slot beside the `concurrency` running ones
   * (default: 16, or `concurrency` if more; 0 turns it off). Within that cap, as many as the slots
   * get through in about 20 ms at the handlers' average run time, so only short jobs are prefetched.
   * The next jobs are then claimed while the last ones still run: the claim's round trip is not
   * paid between two jobs.
   */
  prefetch?: number
  /** A claimed job waiting this long for a slot goes back to the queue for another process (default 200 ms). */
  prefetchTtlMs?: number
  /** Fault injection for tests: runs before each heartbeat statement; throwing fails the beat. */
  faults?: { heartbeat?: () => void | Promise<void> }
}

interface Running {
  controller: AbortController
  promise: Promise<void>
  cancelled: boolean
  /** the fencing token of this run */
  key: LeaseKey
  /** until when (local clock) the lease is known to hold: the time a renewal was sent + lease */
  leaseEnd: number
  /** aborts the handler at leaseEnd - margin unless a renewal moves it */
  watchdog: NodeJS.Timeout | undefined
  /** aborted because the lease could not be kept: nothing more is written for this run */
  stale: boolean
  /** the run is over (its outcome recorded or left): its watchdog is cleared for good */
  ended: boolean
  /** a renewal waiting for the row lock another transaction holds is in flight (renewHeld) */
  renewing: boolean
  /** the handler is done and its outcome is being recorded: its slot is free for a new job */
  settling: boolean
  /** holds one of the `concurrency` slots (a prefetched job waits for one, see acquireSlot) */
  slot: boolean
  /** when the slot was taken (local clock): the handler's run time feeds the prefetch decision */
  slotAt: number
  row: ClaimedRow
}

/** A claimed job waiting for a free slot. */
interface SlotWaiter {
  entry: Running
  /** stops listening for an abort and for the time limit */
  detach: () => void
  grant: (outcome: 'run' | 'gone') => void
}

/** Finishes waiting for the next batch statement. */
interface PendingFinish extends Finish {
  resolve: (row: FinishedRow | undefined) => void
  reject: (err: unknown) => void
}

/** At most this many claims run at once: while one waits for the database, another can fill the slots that freed. */
const MAX_CLAIMS_IN_FLIGHT = 2
/** Free slots from which a claim takes only half of them, leaving the rest to a second claim. */
const SPLIT_CLAIMS_FROM = 8

/**
 * Prefetch: claim as many jobs beyond the free slots as those slots get through in about this long,
 * going by the handlers' average run time (so none is held from other processes for longer).
 */
const PREFETCH_WAIT_MS = 20
/** Prefetch cap when the engine's options do not set one: that many jobs, or `concurrency` if more. */
const PREFETCH_DEFAULT = 16
/** Weight of the newest run time in that average. */
const RUN_EWMA_WEIGHT = 0.2

/** At most this many jobs are finished by one statement. */
const FINISH_BATCH = 256

/**
 * Runs whose handler is done and whose end is still being recorded: at most this many (or four per
 * slot, if more), so that while the statements recording ends are held up (a lock, a slow
 * database) no new jobs are claimed only to wait behind them.
 */
export const SETTLING_MAX = FINISH_BATCH

/** Lease renewals that wait for a row lock another transaction holds, at most this many at once. */
const MAX_WAITING_RENEWALS = 1

/** Held jobs are parked this far in the future so no worker claims them meanwhile. */
const PARKED_MS = 365 * 24 * 3600 * 1000

/** The longest wait between attempts that only undo a failed job's work (2, 4, 8 s, ... up to this). */
const CLEANUP_RETRY_MAX_S = 60
const CANCELLED = { error_type: 'cancelled', error_message: 'The job was cancelled' }

/** When the statement that leased a held job was sent (local clock), until hold() picks it up. */
const heldTakenAt = new WeakMap<TakenJob, number>()

export class JobEngine {
  readonly workerId = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`
  private readonly handlers = new Map<string, JobHandler>()
  private readonly running = new Map<string, Running>()
  /** Lease owner of request-held jobs: apart from workerId, so stop() never gives them back. */
  readonly heldBy = `${this.workerId}:held`
  private readonly held = new Map<string, HeldJob>()
  private timer: NodeJS.Timeout | undefined
  private immediate: NodeJS.Immediate | undefined
  private heartbeatTimer: NodeJS.Timeout | undefined
  private beating = false
  private stopping = true
  /** claims in flight (at most MAX_CLAIMS_IN_FLIGHT), and the slots they may fill */
  private claims = new Set<Promise<void>>()
  private reserved = 0
  private wakePending = false
  private unlisten: Array<() => void> = []
  /** running jobs whose handler has not returned yet (the ones concurrency counts) */
  private busy = 0
  /** runs whose handler is done and whose end is being recorded (their slots are free) */
  private settlingRuns = 0
  /** renewals waiting for a row lock, in flight (at most MAX_WAITING_RENEWALS) */
  private waitingRenewals = 0
  /** claimed jobs waiting for a slot, first come first served */
  private waiters: SlotWaiter[] = []
  /** moving average of handler run times (ms); undefined until one ran */
  private runEwmaMs: number | undefined
  private finishQueue: PendingFinish[] = []
  private finishing = false
  private readonly pool: pg.Pool | undefined
  /** where the hot statements run */
  private readonly sql: PrismaClient | pg.Pool

  constructor (private readonly opts: EngineOptions) {
    if (opts.databaseUrl) {
      this.pool = new pg.Pool({
        // the hot statements are prepared once per connection; their plans do not depend on the
        // values (every table access goes through an index whatever they are), and planning the
        // claim costs more than running it
        connectionString: sessionUrl(opts.databaseUrl, { plan_cache_mode: 'force_generic_plan' }),
        max: Math.max(2, Math.ceil(opts.concurrency / 2) + 2),
        keepAlive: true,
        allowExitOnIdle: true
      })
      // an idle client's lost connection must not crash the process: the next query reconnects
      this.pool.on('error', (err) => opts.log.warn({ err }, 'engine pool connection lost'))
      keepCheckedOutErrors(this.pool)
    }
    this.sql = this.pool ?? opts.prisma
  }

  register (operation: string, handler: JobHandler): void {
    if (this.handlers.has(operation)) throw new Error(`a handler for ${operation} exists already`)
    this.handlers.set(operation, handler)
  }

  /** The handler registered for an operation (e.g. for tests that wrap it). */
  handler (operation: string): JobHandler | undefined {
    return this.handlers.get(operation)
  }

  start (): void {
    this.stopping = false
    const l = this.opts.listener
    if (l) {
      this.unlisten.push(l.on(CHANNELS.jobs, () => this.wake()))
      this.unlisten.push(l.on(CHANNELS.cancel, (id) => this.abortLocal(id)))
      // wake-ups sent while the LISTEN connection was down are lost: look for work at once
      // (missed cancels are found by the heartbeat)
      this.unlisten.push(l.onReconnected(() => this.wake()))
    }
    this.schedule(0)
    this.startBeating()
  }

  private get leaseMs (): number { return this.opts.leaseSeconds * 1000 }
  private get marginMs (): number { return this.opts.leaseMarginMs ?? Math.min(5000, Math.floor(this.leaseMs / 3)) }

  // a self-rescheduling loop: the next beat is timed from the end of the last, so beats never overlap
  private startBeating (): void {
    if (this.beating) return
    this.beating = true
    const every = this.opts.heartbeatMs ?? Math.min(1000, Math.max(250, Math.floor(this.leaseMs / 3)))
    const next = () => {
      if (!this.beating) return
      this.heartbeatTimer = setTimeout(() => {
        this.heartbeatTimer = undefined
        void this.beat().finally(next)
      }, every)
      this.heartbeatTimer.unref()
    }
    next()
  }

  private stopBeating (): void {
    this.beating = false
    clearTimeout(this.heartbeatTimer)
    this.heartbeatTimer = undefined
  }

  /** (Re)arms the local lease watchdog of a run: it aborts the handler once the lease can no longer be trusted. */
  private armWatchdog (r: Running): void {
    clearTimeout(r.watchdog)
    // a heartbeat's answer read after the run ended (it renewed the lease while the job still ran)
    // must not arm it again: it would abort nothing and log a lost lease a lease later
    if (r.ended) return
    r.watchdog = setTimeout(() => this.loseLease(r, 'lease could not be renewed in time'), Math.max(0, r.leaseEnd - this.marginMs - Date.now()))
    r.watchdog.unref()
  }

  private loseLease (r: Running, why: string): void {
    clearTimeout(r.watchdog)
    if (r.stale) return
    r.stale = true
    if (!r.controller.signal.aborted) r.controller.abort(new LeaseLost(r.key.id))
    this.opts.log.warn({ job: r.key.id, attempt: r.key.attempt }, `job aborted: ${why}`)
  }

  /**
   * Enqueues, inside the caller's transaction, a job this process runs itself in requests: parked
   * so no worker claims it, and leased to this process at once. Hold the returned row after commit.
   * One attempt unless `maxAttempts` says more: a takeover (this process died) then only undoes it,
   * unless its handler can finish it (a takeover is attempt 2).
   */
  async enqueueHeld (tx: InTx, input: EnqueueInput): Promise<TakenJob> {
    // the lease runs from the transaction's start (now()), at the latest from here
    const sentAt = Date.now()
    const { id } = await enqueueJob(tx, { ...input, runAt: new Date(Date.now() + PARKED_MS), maxAttempts: input.maxAttempts ?? 1 })
    const row = await takeJob(tx, this.heldBy, this.opts.leaseSeconds, id, 'queued')
    if (!row) throw new Error(`job ${id} could not be held`)
    heldTakenAt.set(row, sentAt)
    return row
  }

  /** Leases an existing queued (or parked started) job to this process; undefined if it cannot be had. */
  async take (db: Sql, id: string, state: 'queued' | 'started'): Promise<TakenJob | undefined> {
    const sentAt = Date.now()
    const row = await takeJob(db, this.heldBy, this.opts.leaseSeconds, id, state)
    if (row) heldTakenAt.set(row, sentAt)
    return row
  }

  /**
   * The handle of a job this process leased with enqueueHeld/take: heartbeated with the engine's own
   * jobs. Call it once the transaction that enqueued (or took) the job has committed: a heartbeat
   * reads the committed rows, so before that it finds the job not leased here and takes its lease
   * for lost (unless the handle is finished in that same transaction, with no await before it).
   */
  hold (row: TakenJob, bytesTotal: number | null): HeldJob {
    const handle = new HeldJob({
      prisma: this.opts.prisma,
      log: this.opts.log,
      owner: this.heldBy,
      listener: this.opts.listener,
      leaseMs: this.leaseMs,
      marginMs: this.marginMs,
      takenAt: heldTakenAt.get(row) ?? Date.now(),
      release: (id) => {
        this.held.delete(id)
        if (this.stopping && this.held.size === 0 && this.running.size === 0) {
          this.stopBeating()
          if (this.stopped) void this.endPool()
        }
      }
    }, row, bytesTotal)
    this.held.set(row.id, handle)
    this.startBeating()
    return handle
  }

  /** Wakes the poller now (new job enqueued, NOTIFY received). */
  wake (): void {
    if (this.stopping) return
    if (this.claims.size >= MAX_CLAIMS_IN_FLIGHT) this.wakePending = true
    else this.schedule(0)
  }

  /** Stops claiming, aborts running handlers and gives their jobs back to the queue. */
  async stop (): Promise<void> {
    this.stopping = true
    this.stopped = true
    for (const u of this.unlisten) u()
    this.unlisten = []
    clearTimeout(this.timer)
    clearImmediate(this.immediate)
    // held jobs are finished by their requests, which keep their leases alive until then
    if (this.held.size === 0) this.stopBeating()
    // a claim in flight has already committed its jobs as ours: let it launch them, so they are
    // given back below rather than left started until their lease runs out
    await Promise.allSettled([...this.claims])
    // claimed jobs that never started go back as they were, their attempt unused
    await this.unclaimWaiting(this.waiters.splice(0))
    const ids = [...this.running.keys()]
    for (const r of this.running.values()) r.controller.abort(new Error('shutting down'))
    // a handler that ignores its signal is not waited for longer than a lease
    await Promise.race([
      Promise.allSettled([...this.running.values()].map(r => r.promise)),
      new Promise(resolve => setTimeout(resolve, this.opts.leaseSeconds * 1000).unref())
    ])
    await releaseJobs(this.opts.prisma, this.workerId, ids).catch(err => this.opts.log.error({ err }, 'could not release jobs'))
    if (this.held.size === 0) await this.endPool()
  }

  private poolEnded = false
  /** stop() or crash() was called (a never-started engine still beats its held jobs) */
  private stopped = false
  private async endPool (): Promise<void> {
    if (!this.pool || this.poolEnded) return
    this.poolEnded = true
    await this.pool.end().catch(err => this.opts.log.warn({ err }, 'could not close the engine pool'))
  }

  /**
   * Simulates this process dying (tests): timers stop and handlers are aborted, but nothing is
   * written, so the leases simply expire.
   */
  crash (): void {
    this.stopping = true
    this.stopped = true
    for (const u of this.unlisten) u()
    this.unlisten = []
    clearTimeout(this.timer)
    clearImmediate(this.immediate)
    this.stopBeating()
    // jobs waiting for a slot are left to their leases too: nothing is written for them
    for (const w of this.waiters.splice(0)) w.grant('gone')
    // nor for running ones: their attempts are as good as stale (a handler that ends now writes nothing)
    for (const r of this.running.values()) {
      r.stale = true
      r.controller.abort(new Error('lease lost'))
    }
    for (const h of this.held.values()) h.leaseLost()
    void this.endPool()
  }

  /** Signals a running job of this process to abort now (cancel NOTIFY, heartbeat). */
  abortLocal (id: string): void {
    const r = this.running.get(id)
    if (r && !r.cancelled) {
      r.cancelled = true
      r.controller.abort(new Error('cancelled'))
    }
  }

  get activeJobs (): number {
    return this.running.size
  }

  /** Resolves when no job runs in this engine (tests, benches). */
  async idle (): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running.values()].map(r => r.promise))
  }

  private schedule (ms: number): void {
    clearTimeout(this.timer)
    this.timer = undefined
    clearImmediate(this.immediate)
    this.immediate = undefined
    // now means this turn of the event loop: a 0 ms timer waits at least 1 ms, a claim's whole time
    if (ms <= 0) this.immediate = setImmediate(() => { this.immediate = undefined; void this.poll() })
    else this.timer = setTimeout(() => { void this.poll() }, ms)
  }

  private poll (): void {
    if (this.stopping) return
    if (this.claims.size >= MAX_CLAIMS_IN_FLIGHT) { this.wakePending = true; return }
    const free = this.capacity() - this.reserved
    if (free <= 0) {
      // the claims in flight hold every free slot: the last to end looks again
      if (this.claims.size > 0) this.wakePending = true
      return
    }
    // with a claim in flight already, this one takes what is left; alone, half the free slots when
    // there are many, so a second claim can run beside it (the database works on both at once;
    // with few slots, two small claims cost the database more per job than they gain)
    const size = this.claims.size > 0 || free < SPLIT_CLAIMS_FROM ? free : Math.ceil(free / 2)
    this.reserved += size
    const done: Promise<void> = this.claimAndLaunch(size).finally(() => { this.claims.delete(done) })
    this.claims.add(done)
    if (this.claims.size < MAX_CLAIMS_IN_FLIGHT && free - size > 0) this.schedule(0)
  }

  private async claimAndLaunch (size: number): Promise<void> {
    this.wakePending = false
    let claimed: ClaimedRow[] = []
    let reserved = true
    const unreserve = () => { if (reserved) { reserved = false; this.reserved -= size } }
    try {
      const sentAt = Date.now()
      claimed = await claimJobs(this.sql, this.workerId, this.opts.leaseSeconds, size, [...this.running.keys()])
      unreserve()
      // running before anything else, so a cancel NOTIFY from now on finds the job
      for (const row of claimed) this.launch(row, sentAt)
      if (claimed.length > 0) await this.announceClaims(claimed).catch(err => this.opts.log.warn({ err }, 'could not publish claimed jobs'))
    } catch (err) {
      unreserve()
      this.opts.log.error({ err }, 'claiming jobs failed')
    }
    if (!this.stopping) {
      // a full claim says more may be waiting; a short one that the queue is drained for now
      const more = claimed.length >= size || this.wakePending
      if (more && this.reserved < this.capacity()) this.schedule(0)
      else if (this.claims.size <= 1) this.schedule(this.opts.pollMs ?? 1000)
    }
  }

  private async announceClaims (claimed: ClaimedRow[]): Promise<void> {
    // the claim statement published the claimed jobs; their ancestors start with them
    const children = claimed.filter(r => r.parent_id).map(r => r.id)
    if (children.length > 0) await publishChange(this.opts.prisma, jobChanges(await startAncestors(this.opts.prisma, children)))
    for (const r of claimed) this.opts.metrics?.claimed(r.operation, r.claim_latency_ms)
  }

  private async beat (): Promise<void> {
    await Promise.all([this.beatRunning(), this.beatHeld()])
  }

  private async beatHeld (): Promise<void> {
    const ids = [...this.held.keys()]
    if (ids.length === 0) return
    const sentAt = Date.now()
    try {
      await this.opts.faults?.heartbeat?.()
      const leased = await heartbeat(this.sql, this.heldBy, [...this.held.values()].map(h => ({ id: h.id, attempt: h.row.attempts })), this.opts.leaseSeconds)
      const leasedIds = new Set(leased.map(h => h.id))
      for (const id of ids) if (!leasedIds.has(id)) this.held.get(id)?.leaseLost()
      for (const h of leased) {
        const handle = this.held.get(h.id)
        if (!handle) continue
        if (h.renewed || await renewLease(this.sql, this.heldBy, { id: h.id, attempt: handle.row.attempts }, this.opts.leaseSeconds)) handle.renewed(sentAt)
        if (h.cancel_requested) handle.cancel()
      }
    } catch (err) {
      // the holders' watchdogs abort them if renewals keep failing
      this.opts.log.warn({ err }, 'heartbeat of held jobs failed')
    }
  }

  private async beatRunning (): Promise<void> {
    const runs = [...this.running.values()].filter(r => !r.stale)
    if (runs.length === 0) return
    // the lease runs from when the renewal was sent, not from when its answer arrived
    const sentAt = Date.now()
    try {
      await this.opts.faults?.heartbeat?.()
      const held = await heartbeat(this.sql, this.workerId, runs.map(r => r.key), this.opts.leaseSeconds)
      const byId = new Map(held.map(h => [h.id, h]))
      for (const r of runs) {
        const h = byId.get(r.key.id)
        if (!h) {
          // finished meanwhile by this run, or taken over: either way nothing more is ours. A run
          // recording its end is left to that statement, which is fenced: its row is missing here
          // once the end committed, and the run says so itself if its lease was lost first
          if (this.running.get(r.key.id) === r && !r.settling) this.loseLease(r, 'lease lost')
          continue
        }
        if (h.cancel_requested) this.abortLocal(h.id)
        if (h.renewed) {
          r.leaseEnd = sentAt + this.leaseMs
          if (!r.stale) this.armWatchdog(r)
          continue
        }
        // skipped: another transaction holds its row (most often the statement recording its end,
        // or a fenced write of its handler). While its watchdog has more than half a lease to go,
        // the next beat renews it; after that a renewal waits for the lock, beside the beats
        if (r.ended || r.stale || r.renewing || r.leaseEnd - this.marginMs - Date.now() > this.leaseMs / 2) continue
        this.renewHeld(r)
      }
    } catch (err) {
      // the watchdogs abort the handlers if renewals keep failing
      this.opts.log.warn({ err }, 'heartbeat failed')
    }
  }

  /**
   * Renews the lease of a run whose row another transaction holds, waiting for that lock, without
   * holding up the beats: the others' renewals go on meanwhile (a beat that waited on one held row
   * left every other job unrenewed until that row's holder committed, and their watchdogs fired).
   * At most MAX_WAITING_RENEWALS at a time, each on a connection of the engine's pool; the rest
   * wait for the next beat.
   */
  private renewHeld (r: Running): void {
    if (this.waitingRenewals >= MAX_WAITING_RENEWALS) return
    this.waitingRenewals++
    r.renewing = true
    const sentAt = Date.now()
    renewLease(this.sql, this.workerId, r.key, this.opts.leaseSeconds)
      .then(renewed => {
        if (!renewed) return
        r.leaseEnd = sentAt + this.leaseMs
        if (!r.stale) this.armWatchdog(r)
      }, err => this.opts.log.warn({ err, job: r.key.id }, 'lease renewal failed'))
      .finally(() => {
        this.waitingRenewals--
        r.renewing = false
      })
  }

  private launch (row: ClaimedRow, sentAt: number): void {
    const controller = new AbortController()
    const entry: Running = {
      controller,
      promise: Promise.resolve(),
      cancelled: row.cancel_requested,
      key: { id: row.id, attempt: row.attempts },
      leaseEnd: sentAt + this.leaseMs,
      watchdog: undefined,
      stale: false,
      ended: false,
      renewing: false,
      settling: false,
      slot: false,
      slotAt: 0,
      row
    }
    this.running.set(row.id, entry)
    this.armWatchdog(entry)
    entry.promise = this.execute(row, entry)
      .catch(err => this.opts.log.error({ err, job: row.id }, 'job bookkeeping failed; the lease will expire and the job be taken over'))
      .finally(() => {
        entry.ended = true
        clearTimeout(entry.watchdog)
        this.handlerDone(entry)
        if (entry.settling) this.settlingRuns--
        if (this.running.get(row.id) === entry) this.running.delete(row.id)
        this.wake()
      })
  }

  private context (row: ClaimedRow, entry: Running, log: FastifyBaseLogger): JobContext & { flush: () => Promise<void>, close: () => Promise<{ lines: PendingLine[], description?: string }>, discard: () => Promise<void>, abandon: () => Promise<void> } {
    const { prisma } = this.opts
    const signal = entry.controller.signal
    const key = entry.key
    const marginS = this.marginMs / 1000
    // a write refused because the attempt is stale stops the run
    const refuse = (): never => {
      this.loseLease(entry, 'its attempt is stale (fenced out)')
      throw new LeaseLost(row.id)
    }
    const fenced = async <T>(fn: (tx: Tx) => Promise<T>, opts?: { timeout?: number, last?: boolean }): Promise<T> => {
      if (entry.stale) refuse()
      const lock = async (tx: Tx) => { if (!await lockAttempt(tx, this.workerId, key, marginS)) refuse() }
      return prisma.$transaction(async (tx) => {
        if (opts?.last !== true) {
          await lock(tx)
          return fn(tx)
        }
        let value: T
        try {
          value = await fn(tx)
        } catch (err) {
          // a stale attempt's writes find the resource moved on by the newer one ("no longer
          // held"): that is its lease lost, not a failure to record (nor a cleanup to run). The
          // check cannot run in a transaction a database error aborted: the error stands then
          await lock(tx).catch((e: unknown) => { if (e instanceof LeaseLost) throw e })
          throw err
        }
        await lock(tx)
        return value
      }, { timeout: opts?.timeout ?? Math.max(1000, this.leaseMs - this.marginMs) })
    }
    const job: JobInfo = {
      id: row.id,
      ownerId: row.owner_id,
      operation: row.operation,
      parentId: row.parent_id,
      rootId: row.root_id,
      params: row.params ?? {},
      checkpoint: row.checkpoint,
      attempts: row.attempts,
      queueWaitMs: Math.max(0, Math.round(row.claim_latency_ms))
    }
    // the job's own log (src/engine/log.ts): batched, fenced by this attempt like progress
    const jobLog = new JobLogWriter(() => this.sql, key, this.workerId, (err) => log.warn({ err }, 'job log write failed'))
    const interval = this.opts.progressIntervalMs ?? 250
    const logEvery = this.opts.progressLogMs ?? 5000
    const startedAt = Date.now()
    let last = 0
    let lastLog = startedAt
    let state: ProgressUpdate = {}
    let dirty = false
    // the unwritten update holds more than a description (bytes, extra): close() must write it
    let dirtyBeyondDescription = false
    let flushTimer: NodeJS.Timeout | undefined
    // the last progress write in flight: settling waits for it, or it could land after the job's
    // final row (and, guarded by locked_by, be lost)
    let inflight: Promise<unknown> = Promise.resolve()
    const write = () => {
      if (!dirty || entry.stale) return
      dirty = false
      dirtyBeyondDescription = false
      last = Date.now()
      const u = state
      const percent = u.bytesDone !== undefined ? percentOf(u.bytesDone, u.bytesTotal) : undefined
      const eta = u.bytesDone !== undefined ? etaOf(u.bytesDone, u.bytesTotal, (Date.now() - startedAt) / 1000) : undefined
      if (Date.now() - lastLog >= logEvery) {
        lastLog = Date.now()
        log.info({ progress: percent, eta_seconds: eta }, u.description ?? (u.bytesDone !== undefined
          ? `job progress: ${formatBytes(u.bytesDone)}${u.bytesTotal ? ' of ' + formatBytes(u.bytesTotal) : ''}`
          : 'job progress'))
      }
      // one write at a time, in order: a later write (the final description) must not be overtaken
      inflight = inflight.then(() => prisma.job.updateMany({
        where: { id: row.id, lockedBy: this.workerId, attempts: key.attempt },
        data: {
          ...(u.bytesDone !== undefined ? { bytesDone: BigInt(Math.floor(u.bytesDone)) } : {}),
          ...(u.bytesTotal !== undefined ? { bytesTotal: BigInt(Math.floor(u.bytesTotal)) } : {}),
          ...(u.description !== undefined ? { description: u.description } : {}),
          ...(u.extra !== undefined ? { extra: u.extra as object } : {}),
          ...(percent !== undefined ? { progress: percent } : {}),
          etaSeconds: eta ?? null,
          lastModified: new Date()
        }
      }).then(r => {
        if (r.count > 0) return publishChange(prisma, jobChanges([row]))
        this.loseLease(entry, 'its progress write was refused (fenced out)')
      })).catch(err => log.warn({ err }, 'progress write failed'))
    }
    const discard = async (): Promise<void> => {
      clearTimeout(flushTimer)
      flushTimer = undefined
      dirty = false
      await Promise.all([inflight, jobLog.flush()])
    }
    return {
      job,
      signal,
      prisma,
      log: (line) => { if (!entry.stale) jobLog.write(line) },
      logger: log,
      progress: (u) => {
        state = { ...state, ...u }
        dirty = true
        if (Object.keys(u).some(k => k !== 'description')) dirtyBeyondDescription = true
        const wait = interval - (Date.now() - last)
        if (wait <= 0 && dirtyBeyondDescription) {
          write()
        } else if (!flushTimer) {
          // a description alone waits an interval: a handler that ends meanwhile (its last words,
          // "created a 10 GiB drive") hands it to the statement recording its end (close)
          flushTimer = setTimeout(() => { flushTimer = undefined; write() }, dirtyBeyondDescription ? wait : Math.max(wait, interval))
          flushTimer.unref()
        }
      },
      checkpoint: async (data) => {
        if (entry.stale) refuse()
        if (!await saveCheckpoint(prisma, this.workerId, key, data)) refuse()
      },
      fence: async () => {
        if (entry.stale) refuse()
        const sentAt = Date.now()
        if (!await fenceLease(prisma, this.workerId, key, this.opts.leaseSeconds, marginS)) refuse()
        entry.leaseEnd = Math.max(entry.leaseEnd, sentAt + this.leaseMs)
        this.armWatchdog(entry)
      },
      guard: () => {
        if (entry.stale) refuse()
        if (Date.now() < entry.leaseEnd - this.marginMs) return
        this.loseLease(entry, 'its lease ran out before an irreversible storage step')
        throw new LeaseLost(row.id)
      },
      fenced,
      fencedStatement: async (run) => {
        if (entry.stale) refuse()
        const r = await run({ jobId: row.id, worker: this.workerId, attempt: key.attempt, marginSeconds: marginS })
        if (!(r.fenced > 0)) refuse()
        return r
      },
      flush: async () => {
        clearTimeout(flushTimer)
        flushTimer = undefined
        write()
        await Promise.all([inflight, jobLog.flush()])
      },
      // the end of the run: progress written, and the log's last lines handed to the statement that
      // records the job's end (written with it, fenced by the same attempt)
      // (a last update of the description alone, "copied 10 GiB in 4.2 s", goes with the end too,
      // not as a write of its own)
      close: async () => {
        clearTimeout(flushTimer)
        flushTimer = undefined
        const description = dirty && !dirtyBeyondDescription && !entry.stale ? state.description : undefined
        if (description !== undefined) dirty = false
        else write()
        await inflight
        return { lines: await jobLog.take(), ...(description !== undefined ? { description } : {}) }
      },
      // progress not yet written is dropped (a requeue is the job's one change event); log lines are kept
      discard,
      // the run is not this process's to record (a stale attempt): its buffered lines are dropped too,
      // and the writes in flight waited for, so that no write of the run outlives it (the engine's
      // stop waits for its runs, then the database client closes)
      abandon: async () => {
        jobLog.discard()
        await discard()
      }
    }
  }

  /** Frees the concurrency slot of a run (once): its handler returned. */
  private handlerDone (entry: Running): void {
    if (entry.settling || !entry.slot) return
    entry.settling = true
    this.settlingRuns++
    const ran = Date.now() - entry.slotAt
    this.runEwmaMs = this.runEwmaMs === undefined ? ran : this.runEwmaMs + RUN_EWMA_WEIGHT * (ran - this.runEwmaMs)
    // the slot goes to the first job waiting for one, else back to the pool
    const next = this.waiters.shift()
    if (next) this.grantSlot(next)
    else this.busy--
    this.wake()
  }

  /**
   * Jobs this engine may hold (running or waiting for a slot) beside the ones it has: none while
   * SETTLING_MAX runs wait for their ends to be recorded.
   */
  private capacity (): number {
    const settlingRoom = Math.max(SETTLING_MAX, 4 * this.opts.concurrency) - this.settlingRuns
    return Math.min(this.opts.concurrency + this.prefetchAllowance() - this.busy - this.waiters.length, settlingRoom)
  }

  /**
   * How many claimed jobs may wait for a slot: only while handlers are short, so a prefetched job
   * waits milliseconds, not the length of a clone (it would be held from the other processes).
   */
  private prefetchAllowance (): number {
    const max = this.opts.prefetch ?? Math.max(PREFETCH_DEFAULT, this.opts.concurrency)
    if (max <= 0 || this.runEwmaMs === undefined) return 0
    // the jobs `concurrency` slots finish in PREFETCH_WAIT_MS at the average run time (none when a
    // run takes longer than that: a clone never waits behind another in a process)
    return Math.min(max, Math.floor(this.opts.concurrency * PREFETCH_WAIT_MS / Math.max(this.runEwmaMs, 0.1)))
  }

  /**
   * Takes one of the `concurrency` slots for a claimed job, waiting for one if they are all taken.
   * 'gone': it waited longer than prefetchTtlMs (or the engine is stopping) and was given back to
   * the queue, unrun. An aborted job (cancelled, lease lost) stops waiting and runs its outcome
   * without a slot: it only records that outcome, and cleans up what it never started.
   */
  private acquireSlot (entry: Running): Promise<'run' | 'gone'> {
    if (this.busy < this.opts.concurrency && this.waiters.length === 0) {
      this.busy++
      entry.slot = true
      entry.slotAt = Date.now()
      return Promise.resolve('run')
    }
    return new Promise(resolve => {
      const leave = () => {
        const i = this.waiters.indexOf(waiter)
        if (i >= 0) this.waiters.splice(i, 1)
        waiter.detach()
      }
      const onAbort = () => { leave(); resolve('run') }
      const ttl = this.opts.prefetchTtlMs ?? 200
      const timer = setTimeout(() => {
        leave()
        // the slots are held by long runs that have not ended yet: no more prefetching until short
        // runs bring the average down again (else jobs would be claimed and given back in a loop)
        this.runEwmaMs = Math.max(this.runEwmaMs ?? 0, ttl * this.opts.concurrency)
        void this.unclaimWaiting([waiter])
      }, ttl)
      const waiter: SlotWaiter = {
        entry,
        detach: () => {
          entry.controller.signal.removeEventListener('abort', onAbort)
          clearTimeout(timer)
        },
        grant: (outcome) => { waiter.detach(); resolve(outcome) }
      }
      entry.controller.signal.addEventListener('abort', onAbort, { once: true })
      this.waiters.push(waiter)
    })
  }

  private grantSlot (w: SlotWaiter): void {
    w.entry.slot = true
    w.entry.slotAt = Date.now()
    w.grant('run')
  }

  /** Gives claimed jobs that never started back to the queue (see unclaimJobs). */
  private async unclaimWaiting (list: SlotWaiter[]): Promise<void> {
    if (list.length === 0) return
    // from now on an abort (shutdown) does not make them run
    for (const w of list) w.detach()
    try {
      await unclaimJobs(this.sql, this.workerId, list.map(w => ({ key: w.entry.key, priorState: w.entry.row.prior_state, wasStarted: w.entry.row.was_started })))
    } catch (err) {
      // their leases expire and another process takes them over
      this.opts.log.warn({ err }, 'could not give back claimed jobs that never started')
    }
    for (const w of list) {
      clearTimeout(w.entry.watchdog)
      w.grant('gone')
    }
    this.wake()
  }

  /**
   * Records a finish with the others that come meanwhile: while one batch statement is in flight
   * the next finishes queue up and go together in the next one, so an idle engine records a finish
   * at once and a busy one records many per statement (and per commit).
   */
  private finishBatched (f: Finish): Promise<FinishedRow | undefined> {
    return new Promise((resolve, reject) => {
      this.finishQueue.push({ ...f, resolve, reject })
      if (!this.finishing) void this.flushFinishes()
    })
  }

  private async flushFinishes (): Promise<void> {
    this.finishing = true
    try {
      while (this.finishQueue.length > 0) {
        // the finishes of jobs that end in the same turn of the event loop go together
        await new Promise(resolve => setImmediate(resolve))
        const batch = this.finishQueue.splice(0, FINISH_BATCH)
        try {
          const rows = await finishJobs(this.sql, this.workerId, batch)
          const byId = new Map(rows.map(r => [r.id, r]))
          for (const b of batch) b.resolve(byId.get(b.key.id))
        } catch (err) {
          for (const b of batch) b.reject(err)
        }
      }
    } finally {
      this.finishing = false
    }
  }

  /** Finishes a job, cancels its siblings when it failed, wakes its parent and publishes it all. */
  private async settle (row: ClaimedRow, fields: FinishFields, log: FastifyBaseLogger, entry?: Running, lines?: PendingLine[]): Promise<void> {
    if (entry?.stale) {
      log.warn('job finished after its lease was lost; its outcome was not recorded')
      return
    }
    // the handler is done: its slot takes a new job while the outcome is recorded
    if (entry) this.handlerDone(entry)
    const cascade = fields.state !== 'success' && row.parent_id !== null
    const key = { id: row.id, attempt: row.attempts }
    const record = () => !cascade
      ? this.finishBatched({ key, fields, lines })
      : this.opts.prisma.$transaction(async (tx) => {
        // parent first, then this child, then its siblings: one lock order for every settle of a family
        await lockJob(tx, row.parent_id!)
        const finished = await finishJob(tx, this.workerId, key, fields, lines)
        // one child failed or was cancelled: its siblings are cancelled, then the parent settles
        if (finished) await requestCancel(tx, [row.parent_id!], { childrenOnly: true, except: row.id })
        return finished
      })
    let done: Awaited<ReturnType<typeof record>>
    for (let attempt = 1; ; attempt++) {
      try {
        done = await record()
        break
      } catch (err) {
        // a lost connection or a serialisation failure must not leave the job to the lease
        if (attempt >= 3) throw err
        log.warn({ err, attempt }, 'recording the end of the job failed; retrying')
        await new Promise(resolve => setTimeout(resolve, 200 * attempt))
      }
    }
    if (!done) {
      log.warn('job finished after its lease was lost; its outcome was not recorded')
      return
    }
    this.opts.metrics?.finished(row.operation, fields.state, done.duration_s)
    const line = { state: fields.state, seconds: Math.round(done.duration_s * 10) / 10, ...(fields.error ? { error: fields.error.error_message } : {}) }
    if (fields.state === 'error') log.warn(line, 'job failed')
    else log.info(line, `job ${fields.state === 'success' ? 'succeeded' : 'cancelled'}`)
  }

  private async execute (row: ClaimedRow, entry: Running): Promise<void> {
    const launchedAt = Date.now()
    if (await this.acquireSlot(entry) === 'gone' || entry.stale) return
    // aborted while waiting, not by a cancel (crash, lease lost): not this process's to run
    if (entry.controller.signal.aborted && !entry.cancelled) return
    // time spent waiting here for a slot is time in the queue too
    row.claim_latency_ms += Date.now() - launchedAt
    const handler = this.handlers.get(row.operation)
    const log = this.opts.log.child({ job: row.id, operation: row.operation })
    const ctx = this.context(row, entry, log)
    const t0 = Date.now()
    const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(3)} s`
    // a run the stop or a lost lease aborted, not to be recorded (its handler threw, or its lease is
    // lost): the job is someone else's now, or will be once the stop releases it, so its row is left alone
    const aborted = async () => {
      const why = String((entry.controller.signal.reason as Error | undefined)?.message ?? 'aborted')
      log.info('job aborted: ' + why)
      if (entry.stale) return ctx.abandon()
      // shutting down: the lease is still ours until the stop releases it, so the reason is worth keeping
      ctx.log('stopped: ' + why + '; the job will run again elsewhere')
      await ctx.flush()
    }
    const fail = async (reason: CleanupReason) => {
      // a stale attempt undoes nothing: the job and what it made belong to the newer attempt
      if (entry.stale) return ctx.abandon()
      try {
        // a run can fail before it learns its attempt is stale (a newer attempt took the job over
        // while it was held up): its cleanup would undo the newer attempt's work, since cleanups
        // guard on locked_by_job (the job id, which both share). So the fence is checked (and the
        // lease renewed) first; LeaseLost: nothing is undone, nothing recorded
        if (handler?.cleanup) {
          await ctx.fence()
          await handler.cleanup(ctx, reason)
        }
      } catch (err) {
        // refused by the fence, before or inside the cleanup (its writes may be ctx.fenced)
        if (err instanceof LeaseLost || entry.stale) {
          log.warn({ attempts: row.attempts }, 'job failed after its attempt went stale; its cleanup was left to the newer attempt')
          return ctx.abandon()
        }
        // the database or the drive storage could not be reached (pool exhausted, restarting, Ceph
        // down), or the cleanup's transaction lost to a simultaneous one (a deadlock): recording
        // the failure now would leave what the job made half-made for good; a
        // later attempt undoes it instead, past max_attempts too (those bound runs, not undoing)
        const db = transientDatabaseError(err)
        const blocked = db === 'conflict' ? 'finish: a simultaneous transaction conflicted with it' : db !== undefined ? 'reach the database' : (err as { retryable?: unknown } | null)?.retryable === true ? 'reach the drive storage' : undefined
        if (blocked !== undefined && !entry.cancelled) {
          const delay = Math.min(2 ** row.attempts, CLEANUP_RETRY_MAX_S)
          log.warn({ err, attempts: row.attempts, retryInSeconds: delay }, `job cleanup could not ${blocked}; it runs again later`)
          ctx.log(`cleanup could not ${blocked}; the job runs again in ${delay} s to undo its work (attempt ${row.attempts})`)
          await ctx.discard()
          // the next attempt only cleans up, and records this outcome (written with the requeue, on
          // the engine's own connections: the shared pool may be the one that is exhausted)
          if (await retryJob(this.sql, this.workerId, { id: row.id, attempt: row.attempts }, delay, { cleanupPending: reason }).catch(() => false)) return
        }
        if (err instanceof IncompleteParams) {
          // its run stopped at the same check before it made anything: nothing to undo
          log.warn({ attempts: row.attempts }, 'job cleanup skipped: the job parameters are incomplete, so the job made nothing')
          ctx.log('cleanup skipped: the job parameters are incomplete, so the job made nothing')
        } else {
          log.error({ err }, 'job cleanup failed')
        }
      }
      ctx.log(reason.state === 'cancelled' ? `cancelled after ${elapsed()}` : `failed after ${elapsed()}: ${reason.error?.error_message ?? 'unknown error'}`)
      const end = await ctx.close()
      await this.settle(row, { state: reason.state, error: reason.error ?? null, description: end.description }, log, entry, end.lines)
    }
    if (entry.cancelled) return fail({ state: 'cancelled', error: CANCELLED })
    // an earlier attempt failed but could not undo its work: undo it now, with that outcome
    const pending = (row.checkpoint as { cleanupPending?: CleanupReason } | null)?.cleanupPending
    if (pending !== undefined && (pending.state === 'error' || pending.state === 'cancelled')) {
      ctx.log(`attempt ${row.attempts}: undoing the work of the failed attempt`)
      return fail(pending)
    }
    if (row.has_children) {
      const bad = await childOutcome(this.opts.prisma, row.id)
      if (bad) return fail({ state: bad.state, error: bad.error ?? CANCELLED })
      if (!handler) return this.settle(row, { state: 'success' }, log, entry)
    }
    if (!handler) {
      return fail({ state: 'error', error: { error_type: 'backend', error_message: `no handler for operation ${row.operation}` } })
    }
    // ran before: its process died (lease expired) or shut down while running it
    if (row.taken_over || row.attempts > 1) {
      if (!handler.resumable || row.attempts > row.max_attempts) {
        log.warn({ attempts: row.attempts }, 'job taken over from a stopped process; undoing it')
        // the lease expired: the process died, or it lived but could not renew the lease in time
        // (its heartbeats failed or came late); from here the two cannot be told apart
        const why = 'the process running this job stopped, or could not renew its lease in time'
        const message = handler.resumable
          ? `${why}, and it has no attempts left (${row.max_attempts}); its work was undone`
          : `${why}; its work was undone (this operation cannot resume on another worker)`
        return fail({ state: 'error', error: { error_type: 'backend', error_message: message } })
      }
      log.info({ attempts: row.attempts }, 'job taken over from a stopped process; resuming it')
      ctx.log(`attempt ${row.attempts}: taken over from a stopped process; resuming`)
    } else {
      log.info('job started')
      ctx.log(`started after ${ctx.job.queueWaitMs} ms in the queue`)
    }
    try {
      const result = await handler.run(ctx)
      // a lost lease: not ours to record. A stop's abort leaves the lease ours, and a handler that
      // returned (rather than threw) finished its work: the success is recorded, or a rerun would
      // find the work done and fail (drive_resize: "the drive is no longer held by this job")
      if (entry.stale) return aborted()
      // A cancel that came as the handler finished (it returned, rather than threw): its work is
      // done and committed (the drive made, resized, removed), so the job is a success. Recorded
      // as cancelled it would claim an undone job whose result stands: a cleanup leaves alone
      // what its handler released.
      if (entry.cancelled) ctx.log('a cancel came as the job finished: its work was done, so it stands')
      ctx.log(`succeeded in ${elapsed()}`)
      const end = await ctx.close()
      await this.settle(row, { state: 'success', result, description: end.description }, log, entry, end.lines)
    } catch (err) {
      // a handler that cancelled itself may say why (JobFailure with error type 'cancelled')
      if (entry.cancelled) return fail({ state: 'cancelled', error: err instanceof JobFailure && err.errorType === 'cancelled' ? { error_type: 'cancelled', error_message: err.message } : CANCELLED })
      if (entry.controller.signal.aborted) return aborted()
      // a transient failure (storage or database unreachable, pool exhausted): a resumable job runs again later
      const transient = (err as { retryable?: unknown } | null)?.retryable === true || transientDatabaseError(err) !== undefined
      if (transient && handler.resumable === true && row.attempts < row.max_attempts) {
        const delay = 2 ** row.attempts
        log.warn({ err, attempts: row.attempts, retryInSeconds: delay }, 'job hit a transient failure; retrying later')
        const db = transientDatabaseError(err)
        const what = (err as { retryable?: unknown } | null)?.retryable === true ? String((err as { code?: unknown }).code ?? 'storage unavailable') : db === 'conflict' ? 'a simultaneous transaction conflicted with it in the database' : `database ${db === 'pool' ? 'busy' : 'unreachable'}`
        ctx.log(`transient failure (${what}); retrying in ${delay} s (attempt ${row.attempts} of ${row.max_attempts})`)
        // progress not yet written is dropped: the requeue is the job's one change event now
        await ctx.discard()
        if (await retryJob(this.sql, this.workerId, { id: row.id, attempt: row.attempts }, delay)) return
      }
      const failure = err instanceof JobFailure
      if ((err as { retryable?: unknown } | null)?.retryable === true) {
        log.warn({ err }, 'job failed: transient failure, no retries left')
        return fail({ state: 'error', error: { error_type: 'backend', error_message: 'the drive storage is unavailable; try again later' } })
      }
      if (transient) {
        log.warn({ err }, 'job failed: the database could not be reached')
        return fail({ state: 'error', error: { error_type: 'backend', error_message: 'the database was busy or unreachable; try again later' } })
      }
      if (!failure) {
        log.error({ err }, 'job failed with an unexpected error')
        ctx.log(`unexpected error (${(err as Error | null)?.name ?? 'Error'}); its details are in the service log under job ${row.id}`)
      }
      await fail({
        state: 'error',
        error: { error_type: failure ? err.errorType : 'backend', error_message: failure ? err.message : 'internal error while running the job' }
      })
    }
  }
}
