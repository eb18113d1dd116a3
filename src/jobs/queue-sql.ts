// The few queue statements, in raw SQL: claim, heartbeat, finish, release. Everything else about
// jobs goes through Prisma.
import type { PrismaClient } from '../db/client.ts'

export interface ClaimedRow {
  id: string
  owner_id: string
  operation: string
  parent_id: string | null
  root_id: string
  params: Record<string, unknown>
  checkpoint: unknown
  attempts: number
  max_attempts: number
  cancel_requested: boolean
  /** true when the job was taken over from a process whose lease expired */
  taken_over: boolean
}

/**
 * Claims up to `limit` runnable jobs: queued ones that are due, and started or cancelling ones
 * whose lease has expired (their process died). SKIP LOCKED lets many processes claim at once
 * without ever handing one job to two of them.
 */
export async function claimJobs (prisma: PrismaClient, workerId: string, leaseSeconds: number, limit: number): Promise<ClaimedRow[]> {
  return prisma.$queryRawUnsafe<ClaimedRow[]>(`
    WITH ready AS (
      SELECT id, state <> 'queued' AS taken_over FROM jobs
      WHERE (state = 'queued' AND run_at <= now())
         OR (state IN ('started', 'cancelling') AND locked_until IS NOT NULL AND locked_until < now())
      ORDER BY priority DESC, run_at, created
      LIMIT $3
      FOR UPDATE SKIP LOCKED
    )
    UPDATE jobs j SET
      state = CASE WHEN j.state = 'queued' THEN 'started' ELSE j.state END,
      locked_by = $1,
      locked_until = now() + make_interval(secs => $2),
      attempts = j.attempts + 1,
      started_at = COALESCE(j.started_at, now()),
      last_modified = now()
    FROM ready
    WHERE j.id = ready.id
    RETURNING j.id::text, j.owner_id::text, j.operation, j.parent_id::text, j.root_id::text, j.params,
              j.checkpoint, j.attempts, j.max_attempts, j.cancel_requested, ready.taken_over`,
  workerId, leaseSeconds, limit)
}

/** Renews the leases this worker holds; returns the ids still held and whether each is cancelled. */
export async function heartbeat (prisma: PrismaClient, workerId: string, ids: string[], leaseSeconds: number): Promise<Array<{ id: string, cancel_requested: boolean }>> {
  if (ids.length === 0) return []
  return prisma.$queryRawUnsafe(`
    UPDATE jobs SET locked_until = now() + make_interval(secs => $3)
    WHERE id = ANY($2::uuid[]) AND locked_by = $1
    RETURNING id::text, cancel_requested`, workerId, ids, leaseSeconds)
}

export interface FinishFields {
  state: 'success' | 'error' | 'cancelled'
  result?: unknown
  error?: { error_type: string, error_message: string } | null
}

/** Records the end of a job this worker holds; false when the lease was lost meanwhile. */
export async function finishJob (prisma: PrismaClient, workerId: string, id: string, f: FinishFields): Promise<boolean> {
  const rows = await prisma.$executeRawUnsafe(`
    UPDATE jobs SET state = $3, result = $4::jsonb, error = $5::jsonb,
      progress = CASE WHEN $3 = 'success' THEN 100 ELSE progress END,
      bytes_done = CASE WHEN $3 = 'success' AND bytes_total IS NOT NULL THEN bytes_total ELSE bytes_done END,
      eta_seconds = NULL, locked_by = NULL, locked_until = NULL,
      finished_at = now(), last_modified = now()
    WHERE id = $2::uuid AND locked_by = $1`,
  workerId, id, f.state, JSON.stringify(f.result ?? null), f.error ? JSON.stringify(f.error) : null)
  return rows > 0
}

/** Gives jobs back to the queue on graceful shutdown, so another process picks them up at once. */
export async function releaseJobs (prisma: PrismaClient, workerId: string, ids: string[]): Promise<void> {
  if (ids.length === 0) return
  await prisma.$executeRawUnsafe(`
    UPDATE jobs SET state = CASE WHEN state = 'started' THEN 'queued' ELSE state END,
      locked_by = NULL, locked_until = now() - interval '1 second', last_modified = now()
    WHERE id = ANY($2::uuid[]) AND locked_by = $1`, workerId, ids)
}
