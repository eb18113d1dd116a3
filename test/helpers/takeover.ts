// A stale attempt of a real handler, without mocks: an engine runs the job while a table the
// handler reads or writes is locked (the handler waits there), another "process" takes the job
// over meanwhile (what a claim does once a lease expired: attempt + 1, its own lease), then the
// lock goes and the stale attempt carries on, as a frozen process that wakes before any heartbeat
// told it. Whatever it then writes must not commit. Afterwards the newer attempt can be let run.
import pg from 'pg'
import type { FastifyInstance } from 'fastify'
import type { JobEngine } from '../../src/engine/engine.ts'
import type { JobHandler } from '../../src/engine/types.ts'
import { eventually } from './app.ts'
import { appHandlers, startEngine } from './jobs.ts'
import { WAITING_ON } from './locks.ts'

interface Teardown { teardown: (fn: () => Promise<void> | void) => void }

export const TAKEN_BY = 'someone-else'

/** How long a takeover waits for the job row (see takeOver). */
const TAKEOVER_WAIT_MS = 5000

async function connect (t: Teardown, databaseUrl: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: databaseUrl })
  await c.connect()
  t.teardown(() => c.end().catch(() => {}))
  return c
}

/**
 * Takes the job over as a claim would once its lease is gone: attempt + 1, another owner. A claim
 * skips a locked row and tries again at its next poll; this waits for the row instead, up to
 * TAKEOVER_WAIT_MS, since the attempt's own short statements lock it in passing (a job log flush, a
 * progress write: skipping the row then made the takeover fail by chance). False when it could not
 * be had in that time (the attempt holds its job row: a fenced write in flight) or is finished.
 */
export async function takeOver (c: pg.Client, jobId: string): Promise<boolean> {
  await c.query('BEGIN')
  try {
    await c.query(`SET LOCAL lock_timeout = ${TAKEOVER_WAIT_MS}`)
    const r = await c.query(`
      UPDATE jobs SET attempts = attempts + 1, locked_by = $2, locked_until = now() + interval '60 seconds', last_modified = now()
      WHERE id = $1::uuid AND state IN ('queued', 'started', 'cancelling')`, [jobId, TAKEN_BY])
    await c.query('COMMIT')
    return r.rowCount === 1
  } catch (err) {
    // a failed ROLLBACK (the connection gone) must not hide why the takeover failed
    await c.query('ROLLBACK').catch(() => {})
    if ((err as { code?: string }).code === '55P03') return false // lock_not_available
    throw err
  }
}

export interface StaleRun {
  /** false: the attempt held its job row (a fenced write in flight), so the takeover could not happen */
  tookOver: boolean
  engine: JobEngine
  /** Lets the newer attempt run: the taken-over lease expires, and the engine claims the job again. */
  newer: () => Promise<void>
}

/**
 * Runs the queued job `jobId` with the app's handlers (or `handlers`) in an engine of its own, its first attempt
 * held on `table` (ACCESS EXCLUSIVE: the handler's first statement that names the table waits,
 * before it is even planned), takes the job over while it waits, and returns once that attempt
 * has ended. The engine's heartbeat and lease are long, so the attempt learns nothing of the
 * takeover but what the database refuses it.
 */
export async function runStale (t: Teardown, app: FastifyInstance, databaseUrl: string, jobId: string, table: string, handlers: Record<string, JobHandler> = appHandlers(app)): Promise<StaleRun> {
  const locker = await connect(t, databaseUrl)
  const other = await connect(t, databaseUrl)
  await locker.query('BEGIN')
  await locker.query(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`)
  let locked = true
  const release = async () => { if (locked) { locked = false; await locker.query('COMMIT') } }
  t.teardown(release)
  const engine = await startEngine(t, app, handlers, { databaseUrl, leaseSeconds: 60, heartbeatMs: 60_000 })
  await eventually(async () => (await other.query(WAITING_ON, [table])).rowCount! > 0)
  const tookOver = await takeOver(other, jobId)
  await release()
  await engine.idle()
  return {
    tookOver,
    engine,
    newer: async () => {
      await other.query('UPDATE jobs SET locked_until = now() - interval \'1 second\' WHERE id = $1::uuid AND locked_by = $2', [jobId, TAKEN_BY])
    }
  }
}

/** The job's row as the stale attempt left it. */
export async function jobRow (app: FastifyInstance, id: string): Promise<{ state: string, attempts: number, lockedBy: string | null, finishedAt: Date | null }> {
  return app.prisma.job.findUniqueOrThrow({ where: { id }, select: { state: true, attempts: true, lockedBy: true, finishedAt: true } })
}
