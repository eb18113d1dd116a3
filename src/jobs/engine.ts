// The job runner: claims jobs from PostgreSQL, holds their lease by heartbeat, runs the handler
// of each operation with an abort signal, and records the outcome.
import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import type { FastifyBaseLogger } from 'fastify'
import type { PrismaClient } from '../db/client.ts'
import { claimJobs, finishJob, heartbeat, releaseJobs, type ClaimedRow } from './queue-sql.ts'
import { JobFailure, type CleanupReason, type JobContext, type JobHandler, type JobInfo, type ProgressUpdate } from './types.ts'

export interface EngineOptions {
  prisma: PrismaClient
  log: FastifyBaseLogger
  concurrency: number
  leaseSeconds: number
  /** How often an idle worker looks for work (NOTIFY wakes it sooner). */
  pollMs?: number
  /** How often progress may be written per job. */
  progressIntervalMs?: number
}

interface Running {
  controller: AbortController
  promise: Promise<void>
  cancelled: boolean
}

export class JobEngine {
  readonly workerId = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`
  private readonly handlers = new Map<string, JobHandler>()
  private readonly running = new Map<string, Running>()
  private timer: NodeJS.Timeout | undefined
  private heartbeatTimer: NodeJS.Timeout | undefined
  private stopping = false
  private polling = false

  constructor (private readonly opts: EngineOptions) {}

  register (operation: string, handler: JobHandler): void {
    if (this.handlers.has(operation)) throw new Error(`a handler for ${operation} exists already`)
    this.handlers.set(operation, handler)
  }

  start (): void {
    this.stopping = false
    this.schedule(0)
    const beat = Math.max(250, Math.floor(this.opts.leaseSeconds * 1000 / 3))
    this.heartbeatTimer = setInterval(() => { void this.beat() }, Math.min(beat, 1000))
  }

  /** Wakes the poller now (new job enqueued, NOTIFY received). */
  wake (): void {
    if (!this.stopping) this.schedule(0)
  }

  /** Stops claiming, aborts running handlers and gives their jobs back to the queue. */
  async stop (): Promise<void> {
    this.stopping = true
    clearTimeout(this.timer)
    clearInterval(this.heartbeatTimer)
    const ids = [...this.running.keys()]
    for (const r of this.running.values()) r.controller.abort(new Error('shutting down'))
    await Promise.allSettled([...this.running.values()].map(r => r.promise))
    await releaseJobs(this.opts.prisma, this.workerId, ids).catch(err => this.opts.log.error({ err }, 'could not release jobs'))
  }

  /** Signals a running job of this process to abort now (the cancel endpoint calls it). */
  abortLocal (id: string): void {
    const r = this.running.get(id)
    if (r) {
      r.cancelled = true
      r.controller.abort(new Error('cancelled'))
    }
  }

  get activeJobs (): number {
    return this.running.size
  }

  private schedule (ms: number): void {
    clearTimeout(this.timer)
    this.timer = setTimeout(() => { void this.poll() }, ms)
  }

  private async poll (): Promise<void> {
    if (this.stopping || this.polling) return
    this.polling = true
    let claimed: ClaimedRow[] = []
    try {
      const free = this.opts.concurrency - this.running.size
      if (free > 0) claimed = await claimJobs(this.opts.prisma, this.workerId, this.opts.leaseSeconds, free)
    } catch (err) {
      this.opts.log.error({ err }, 'claiming jobs failed')
    } finally {
      this.polling = false
    }
    for (const row of claimed) this.launch(row)
    if (!this.stopping) this.schedule(claimed.length > 0 ? 0 : (this.opts.pollMs ?? 1000))
  }

  private async beat (): Promise<void> {
    const ids = [...this.running.keys()]
    if (ids.length === 0) return
    try {
      const held = await heartbeat(this.opts.prisma, this.workerId, ids, this.opts.leaseSeconds)
      const heldIds = new Set(held.map(h => h.id))
      for (const id of ids) {
        const r = this.running.get(id)
        if (!r) continue
        if (!heldIds.has(id)) r.controller.abort(new Error('lease lost'))
      }
      for (const h of held) if (h.cancel_requested) this.abortLocal(h.id)
    } catch (err) {
      this.opts.log.warn({ err }, 'heartbeat failed')
    }
  }

  private launch (row: ClaimedRow): void {
    const controller = new AbortController()
    const entry: Running = { controller, promise: Promise.resolve(), cancelled: row.cancel_requested }
    this.running.set(row.id, entry)
    entry.promise = this.execute(row, entry).finally(() => {
      this.running.delete(row.id)
      this.wake()
    })
  }

  private context (row: ClaimedRow, signal: AbortSignal): JobContext {
    const { prisma } = this.opts
    const job: JobInfo = {
      id: row.id,
      ownerId: row.owner_id,
      operation: row.operation,
      parentId: row.parent_id,
      rootId: row.root_id,
      params: row.params ?? {},
      checkpoint: row.checkpoint,
      attempts: row.attempts
    }
    const interval = this.opts.progressIntervalMs ?? 250
    const startedAt = Date.now()
    let last = 0
    let pending: ProgressUpdate | undefined
    let flushTimer: NodeJS.Timeout | undefined
    const write = (u: ProgressUpdate) => {
      last = Date.now()
      const percent = u.bytesTotal && u.bytesTotal > 0 && u.bytesDone !== undefined
        ? Math.min(99, Math.floor(u.bytesDone * 100 / u.bytesTotal))
        : undefined
      const elapsed = (Date.now() - startedAt) / 1000
      const eta = percent !== undefined && u.bytesDone && u.bytesDone > 0 && elapsed > 0.5
        ? Math.round(elapsed * (u.bytesTotal! - u.bytesDone) / u.bytesDone)
        : undefined
      prisma.job.updateMany({
        where: { id: row.id, lockedBy: this.workerId },
        data: {
          ...(u.bytesDone !== undefined ? { bytesDone: BigInt(Math.floor(u.bytesDone)) } : {}),
          ...(u.bytesTotal !== undefined ? { bytesTotal: BigInt(Math.floor(u.bytesTotal)) } : {}),
          ...(u.description !== undefined ? { description: u.description } : {}),
          ...(percent !== undefined ? { progress: percent } : {}),
          ...(eta !== undefined ? { etaSeconds: eta } : {}),
          lastModified: new Date()
        }
      }).catch(err => this.opts.log.warn({ err, job: row.id }, 'progress write failed'))
    }
    return {
      job,
      signal,
      prisma,
      log: this.opts.log.child({ job: row.id, operation: row.operation }),
      progress: (u) => {
        pending = { ...pending, ...u }
        const wait = interval - (Date.now() - last)
        if (wait <= 0) {
          const p = pending
          pending = undefined
          write(p)
        } else if (!flushTimer) {
          flushTimer = setTimeout(() => {
            flushTimer = undefined
            if (pending) { const p = pending; pending = undefined; write(p) }
          }, wait)
          flushTimer.unref()
        }
      },
      checkpoint: async (data) => {
        await prisma.job.updateMany({ where: { id: row.id, lockedBy: this.workerId }, data: { checkpoint: data as object } })
      }
    }
  }

  private async execute (row: ClaimedRow, entry: Running): Promise<void> {
    const { log, prisma } = this.opts
    const handler = this.handlers.get(row.operation)
    const ctx = this.context(row, entry.controller.signal)
    const fail = async (reason: CleanupReason) => {
      try {
        await handler?.cleanup?.(ctx, reason)
      } catch (err) {
        log.error({ err, job: row.id }, 'job cleanup failed')
      }
      await finishJob(prisma, this.workerId, row.id, { state: reason.state, error: reason.error ?? null })
    }
    if (!handler) {
      await fail({ state: 'error', error: { error_type: 'backend', error_message: `no handler for operation ${row.operation}` } })
      return
    }
    if (entry.cancelled) {
      await fail({ state: 'cancelled', error: { error_type: 'cancelled', error_message: 'cancelled' } })
      return
    }
    if (row.taken_over && !handler.resumable) {
      await fail({ state: 'error', error: { error_type: 'backend', error_message: 'the process running this job stopped; its work was undone' } })
      return
    }
    try {
      const result = await handler.run(ctx)
      if (entry.controller.signal.aborted && entry.cancelled) {
        await fail({ state: 'cancelled', error: { error_type: 'cancelled', error_message: 'cancelled' } })
        return
      }
      await finishJob(prisma, this.workerId, row.id, { state: 'success', result })
    } catch (err) {
      if (entry.cancelled) {
        await fail({ state: 'cancelled', error: { error_type: 'cancelled', error_message: 'cancelled' } })
      } else if (entry.controller.signal.aborted) {
        // lease lost or shutting down: the job is someone else's now, leave the row alone
        log.info({ job: row.id }, 'job aborted: ' + String(entry.controller.signal.reason?.message ?? ''))
      } else {
        const failure = err instanceof JobFailure
        if (!failure) log.error({ err, job: row.id }, 'job failed')
        await fail({
          state: 'error',
          error: { error_type: failure ? err.errorType : 'backend', error_message: failure ? err.message : 'internal error while running the job' }
        })
      }
    }
  }
}
