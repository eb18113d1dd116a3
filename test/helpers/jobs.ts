// Job helpers for tests: wait for a job to finish, and extra engines that act as other service
// processes on the same database (each with its own worker id and LISTEN connection).
import type { FastifyInstance } from 'fastify'
import type { Job } from '../../src/db/generated/client.ts'
import { JobEngine, type EngineOptions } from '../../src/engine/engine.ts'
import { LeaseLost } from '../../src/engine/held.ts'
import { PgListener } from '../../src/engine/listener.ts'
import { FINISHED_STATES, OPERATIONS, type JobHandler, type JobState } from '../../src/engine/types.ts'

interface Teardown { teardown: (fn: () => Promise<void> | void) => void }

/** Resolves with the job row once it is success, error or cancelled; throws after `timeoutMs`. */
export async function waitForJob (app: FastifyInstance, id: string, { timeoutMs = 15_000, states = FINISHED_STATES as readonly string[] } = {}): Promise<Job> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const row = await app.prisma.job.findUnique({ where: { id } })
    if (!row) throw new Error(`job ${id} does not exist`)
    if (states.includes(row.state as JobState)) return row
    if (Date.now() > deadline) throw new Error(`job ${id} still ${row.state} after ${timeoutMs} ms`)
    await app.events.waitForChange(id, 200)
  }
}

/** Waits until every job in the database is finished. */
export async function waitForAllJobs (app: FastifyInstance, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (await app.prisma.job.count({ where: { state: { notIn: [...FINISHED_STATES] } } }) > 0) {
    if (Date.now() > deadline) throw new Error('jobs still unfinished')
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/**
 * Starts a worker engine on the app's database, standing in for another service process. It is
 * stopped (jobs released) at teardown unless the test crashed it.
 */
export async function startEngine (t: Teardown, app: FastifyInstance, handlers: Record<string, JobHandler>, opts: Partial<EngineOptions> & { databaseUrl: string }): Promise<JobEngine> {
  const listener = new PgListener(opts.databaseUrl)
  await listener.start()
  const engine = new JobEngine({
    prisma: app.prisma,
    log: app.log,
    concurrency: 4,
    leaseSeconds: 30,
    pollMs: 200,
    listener,
    ...opts
  })
  for (const [op, h] of Object.entries(handlers)) engine.register(op, h)
  engine.start()
  t.teardown(async () => {
    await engine.stop()
    await listener.close()
  })
  return engine
}

export const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

/**
 * Holds this thread for `ms`, as a process stopped or swapped out is held: no timer (a lease
 * watchdog), heartbeat or I/O callback runs meanwhile.
 */
export function holdThread (ms: number): void {
  const until = Date.now() + ms
  while (Date.now() < until) { /* held up */ }
}

/** What a guard (ctx.guard, held.guard) answers now: 'allowed', 'LeaseLost', or another error's text. */
export function guardAnswer (guard: () => void): string {
  try {
    guard()
    return 'allowed'
  } catch (err) {
    return err instanceof LeaseLost ? 'LeaseLost' : String(err)
  }
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function abortableSleep (ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason)
    const timer = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve() }, ms)
    const onAbort = () => { clearTimeout(timer); reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

/** The app's own handlers (every operation it registered), for a worker engine the test starts. */
export function appHandlers (app: FastifyInstance): Record<string, JobHandler> {
  const out: Record<string, JobHandler> = {}
  for (const op of OPERATIONS) {
    const h = app.jobs.handler(op)
    if (h) out[op] = h
  }
  return out
}
