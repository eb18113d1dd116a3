// Resource conflicts between jobs. job_resources rows of unfinished jobs are the authority:
// a 'write' link conflicts with any other link to the same drive or server, a 'read' link only
// with a 'write' one. Services call lockResources inside the transaction that enqueues, so two
// racing requests are serialised by an advisory lock and the loser gets the busy error.
//
// One exception closes a window clients would see: a job that writes a drive holds it through
// drives.locked_by_job from its enqueue (itself, or a server clone's parent) and lets go of it with
// the drive's last change (its resting status), in the handler; the engine records the job's end a
// moment later (finishes are batched). In between, the drive looks ready but the job is still
// unfinished. A running write job on a drive that no job holds any more has released it, so it
// is no conflict. A clone's read of its source ends the same way: the handler gives back its
// reader (drives.readers) with the destination's resting status, and marks that in the job's
// checkpoint (`sourceReleased`, in the same transaction; a rerun after it reads nothing). A running
// job whose checkpoint says so no longer reads, so its read link is no conflict either. Other
// readers (downloads) set no such mark and conflict until their end is recorded.
import type { Tx } from '../db/client.ts'
import { busyWith } from '../domain/errors.ts'
import type { JobResourceInput } from './enqueue.ts'
import { UNFINISHED_SQL } from './queue-sql.ts'

export interface Conflict {
  type: string
  id: string
  jobId: string
  operation: string
  mode: string
}

/** Unfinished jobs (outside the tree `exceptRootId`) whose links conflict with `wanted`. */
export async function findConflicts (tx: Tx, wanted: JobResourceInput[], exceptRootId?: string): Promise<Conflict[]> {
  if (wanted.length === 0) return []
  const except = exceptRootId ?? null
  return tx.$queryRaw<Conflict[]>`
    SELECT r.resource_type AS type, r.resource_id::text AS id, j.id::text AS "jobId", j.operation, r.mode
    FROM unnest(${wanted.map(w => w.type)}::text[], ${wanted.map(w => w.id)}::uuid[], ${wanted.map(w => w.mode ?? 'write')}::text[]) AS w(type, id, mode)
    JOIN job_resources r ON r.resource_type = w.type AND r.resource_id = w.id
    JOIN jobs j ON j.id = r.job_id
    WHERE j.state IN ${UNFINISHED_SQL}
      AND (w.mode = 'write' OR r.mode = 'write')
      AND NOT (r.resource_type = 'drives' AND r.mode = 'write' AND j.state = 'started'
        AND EXISTS (SELECT 1 FROM drives d WHERE d.id = r.resource_id AND d.locked_by_job IS NULL))
      -- IS NOT TRUE, not NOT (...): a job without the mark (a download: no checkpoint) gives NULL
      AND (r.mode = 'read' AND j.state = 'started' AND j.checkpoint->>'sourceReleased' = 'true') IS NOT TRUE
      AND (${except}::uuid IS NULL OR j.root_id <> ${except}::uuid)
    ORDER BY j.created`
}

/**
 * Takes transaction-scoped advisory locks on the resources (in a fixed order, so two callers
 * cannot deadlock) and throws the busy error when an unfinished job holds them in a conflicting
 * way. Call it before enqueueJob in the same transaction; the locks last until it commits.
 */
export async function lockResources (tx: Tx, wanted: JobResourceInput[], opts: { exceptRootId?: string } = {}): Promise<void> {
  const keys = [...new Set(wanted.map(w => `${w.type}:${w.id.toLowerCase()}`))].sort()
  for (const key of keys) await tx.$executeRaw`SELECT pg_advisory_xact_lock(hashtextextended(${key}, 0))`
  const conflicts = await findConflicts(tx, wanted, opts.exceptRootId)
  if (conflicts.length > 0) {
    const c = conflicts[0]
    throw busyWith(c, { id: c.jobId, operation: c.operation })
  }
}
