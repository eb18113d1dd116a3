// Cancelling a job tree from any process: flag the unfinished jobs of the subtree `cancelling`,
// NOTIFY the process running each one (it aborts the handler's signal at once), and wake workers
// so jobs that were not running are claimed for their cleanup.
import type { PrismaClient, Tx } from '../db/client.ts'
import { publishChange } from './events.ts'
import { CHANNELS } from './listener.ts'
import { cancelSubtrees, type CancelledRow } from './queue-sql.ts'

/** Requests cancellation of jobs (and their descendants) inside `tx`; NOTIFYs go out at commit. */
export async function requestCancel (tx: Tx | PrismaClient, ids: string[], opts: { childrenOnly?: boolean, except?: string } = {}): Promise<CancelledRow[]> {
  const rows = await cancelSubtrees(tx, ids, opts)
  if (rows.length === 0) return rows
  await notifyCancelled(tx, rows)
  return rows
}

export async function notifyCancelled (db: Tx | PrismaClient, rows: CancelledRow[]): Promise<void> {
  await db.$executeRaw`SELECT pg_notify(${CHANNELS.cancel}, x) FROM unnest(${rows.map(r => r.id)}::text[]) AS x`
  await db.$executeRaw`SELECT pg_notify(${CHANNELS.jobs}, x) FROM unnest(${rows.filter(r => !r.locked_by).map(r => r.id)}::text[]) AS x`
  await publishChange(db, jobChanges(rows))
}

/** Change events for jobs and, once each, the roots of their trees (whose roll-up moved). */
export function jobChanges (rows: Array<{ id: string, owner_id: string, root_id: string }>): Array<{ ownerId: string, resourceType: 'jobs', resourceId: string }> {
  const seen = new Set<string>()
  const out: Array<{ ownerId: string, resourceType: 'jobs', resourceId: string }> = []
  for (const r of rows) {
    for (const id of [r.id, r.root_id]) {
      if (seen.has(id)) continue
      seen.add(id)
      out.push({ ownerId: r.owner_id, resourceType: 'jobs', resourceId: id })
    }
  }
  return out
}
