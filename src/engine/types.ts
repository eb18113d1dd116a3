// The contract between the job engine and the handlers of each operation.
import type { FastifyBaseLogger } from 'fastify'
import type { PrismaClient, Tx } from '../db/client.ts'
import type { AttemptFence } from './queue-sql.ts'

export const JOB_STATES = ['queued', 'started', 'cancelling', 'success', 'error', 'cancelled'] as const
export type JobState = typeof JOB_STATES[number]
export const FINISHED_STATES: readonly JobState[] = ['success', 'error', 'cancelled']

export const OPERATIONS = [
  'drive_create', 'drive_clone', 'drive_flatten', 'drive_resize', 'drive_delete', 'drive_upload', 'drive_download',
  'server_clone', 'server_start', 'server_stop', 'server_delete'
] as const
export type Operation = typeof OPERATIONS[number]

/** What a handler sees of its job row. */
export interface JobInfo {
  id: string
  ownerId: string
  operation: string
  parentId: string | null
  rootId: string
  params: Record<string, unknown>
  checkpoint: unknown
  /** 1 on the first run; more when the job was taken over after its process died. */
  attempts: number
  /** How long the job waited in the queue before this attempt claimed it (ms). */
  queueWaitMs?: number
}

export interface ProgressUpdate {
  bytesDone?: number
  bytesTotal?: number
  description?: string
  /**
   * Handler-specific detail (TrueNAS's progress.extra), e.g. `{ method: 'cp --sparse=auto', phase:
   * 'copy' }`: shown as the job's `data.extra`. Replaces the previous value.
   */
  extra?: Record<string, unknown>
}

export interface JobContext {
  job: JobInfo
  /** Aborted when the job is cancelled, its lease is lost, or the process shuts down. */
  signal: AbortSignal
  prisma: PrismaClient
  /**
   * Appends a line to the job's own log (GET /jobs/{uuid}/log/): what it copies and how, how long
   * each step took, the cause of an error. Never blocks; lines are written in batches, fenced by
   * this attempt (a stale attempt's lines are dropped). Never log secrets.
   */
  log: (line: string) => void
  /** The process log (pino), with the job id bound. */
  logger: FastifyBaseLogger
  /** Reports progress; the engine throttles database writes to a few per second. */
  progress: (update: ProgressUpdate) => void
  /** Saves handler state so a takeover after a crash can resume instead of restarting. */
  checkpoint: (data: unknown) => Promise<void>
  /**
   * The fencing guard before an irreversible step (renaming a copy into place): renews the lease of
   * this attempt, or throws LeaseLost (and aborts `signal`) when a newer attempt may exist. Every
   * write through the context is fenced by (job id, attempt) the same way.
   */
  fence: () => Promise<void>
  /**
   * The last check before a storage step that nothing can undo and that the storage cannot fence
   * itself (truncating an image, removing one): synchronous, so the storage runs it immediately
   * before the step with no wait in between (DriveStorage's `guard`). Throws LeaseLost (and aborts
   * `signal`) when this attempt may no longer own its job: fenced out, or its lease, by this
   * process's clock, within the margin of its end. A process held up (stopped, swapped out) past
   * its lease can resume into the step before its watchdog timer runs; the clock says the lease is
   * gone even then, and another process may have taken the job over (`fence()` answered before).
   */
  guard: () => void
  /**
   * Runs `fn` in a transaction that holds this attempt's job row locked (no other process can take
   * the job over meanwhile): resource status writes and renames made inside commit only while this
   * attempt still owns the job; a stale attempt gets LeaseLost and nothing commits.
   * `last`: the row is locked (the fence checked) after `fn`, just before the commit, for a
   * transaction that only writes rows: it then holds no job row while it waits for a resource row
   * (progress and lease renewals go on); a takeover meanwhile makes it roll back with LeaseLost,
   * also when `fn` threw because the newer attempt had moved the resource on. Not for renames or
   * anything else outside the transaction: those need the row locked before them.
   */
  fenced: <T>(fn: (tx: Tx) => Promise<T>, opts?: { timeout?: number, last?: boolean }) => Promise<T>
  /**
   * Runs one statement fenced by this attempt, atomic on its own (one round trip, no transaction
   * of ours): `run` binds `fenceParams(fence)` at the placeholders of its `fenceCte(n)` (both in
   * src/engine/queue-sql.ts) and returns the statement's row with `fenced` (how many rows its fence
   * CTE held). 0 means the attempt is stale: nothing was written, the run is aborted and this throws
   * LeaseLost (no cleanup, nothing recorded), as `fenced` does.
   */
  fencedStatement: <R extends { fenced: number }>(run: (fence: AttemptFence) => Promise<R>) => Promise<R>
}

export interface CleanupReason {
  state: 'error' | 'cancelled'
  error?: { error_type: string, error_message: string }
}

export interface JobHandler {
  /** Does the work; the value returned is stored as the job's result. Throwing fails the job. */
  run: (ctx: JobContext) => Promise<unknown>
  /**
   * Undoes what a failed or cancelled job left (e.g. deletes a half-made clone). Must be
   * idempotent: it may run after a crash, for a job whose run() never started or finished.
   */
  cleanup?: (ctx: JobContext, reason: CleanupReason) => Promise<void>
  /**
   * Whether a job whose process died is run again by the process that takes it over (true), or
   * failed and cleaned up (false, the default).
   */
  resumable?: boolean
}

/** Thrown by handlers for failures whose message is safe and useful to show to the client. */
export class JobFailure extends Error {
  constructor (message: string, readonly errorType: string = 'backend') {
    super(message)
    this.name = 'JobFailure'
  }
}

/**
 * A job's parameters lack what its handler needs (only a job written around the service, by SQL,
 * has such): its run stops at that check before it makes anything, and its cleanup, which reads
 * the same parameters, has nothing to undo (the engine logs that at warn, not as a failed cleanup).
 */
export class IncompleteParams extends JobFailure {
  constructor () {
    super('the job parameters are incomplete')
  }
}

/** The handlers a feature contributes, by operation; app.ts registers them with the engine. */
export type HandlerSet = Partial<Record<Operation, JobHandler>>
