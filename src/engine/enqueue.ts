// Creating jobs, always inside the caller's transaction, so a job row exists exactly when the
// domain change that needs it was committed.
import { randomUUID } from 'node:crypto'
import type { Tx } from '../db/client.ts'
import { uri } from '../domain/uris.ts'
import { publishChange } from './events.ts'
import { CHANNELS } from './listener.ts'
import type { Operation } from './types.ts'

export interface JobResourceInput {
  type: 'drives' | 'servers'
  id: string
  /** read: the job only reads it (a clone source); write: the job changes it */
  mode?: 'read' | 'write'
}

export interface EnqueueInput {
  id?: string
  ownerId: string
  /**
   * Makes this job a child of `parentId` (enqueue the parent first, in the same transaction).
   * The parent is claimed only once all its children have finished.
   */
  operation: Operation
  params?: Record<string, unknown>
  resources?: JobResourceInput[]
  parentId?: string
  /** Looked up from the parent when omitted. */
  rootId?: string
  bytesTotal?: number
  description?: string
  runAt?: Date
  maxAttempts?: number
}

export const JOBS_CHANNEL = CHANNELS.jobs

export async function enqueueJob (tx: Tx, input: EnqueueInput): Promise<{ id: string }> {
  const [job] = await enqueueJobs(tx, [input])
  return job
}

/**
 * Enqueues many jobs in the caller's transaction with a fixed number of statements whatever their
 * count: one multi-row insert of the jobs, one of their resources, one batch of change events (each
 * job once, each root once) and one wake-up NOTIFY. Parents come before their children in `inputs`
 * (or already exist).
 */
export async function enqueueJobs (tx: Tx, inputs: EnqueueInput[]): Promise<Array<{ id: string }>> {
  if (inputs.length === 0) return []
  const ids = inputs.map(i => i.id ?? randomUUID())
  const roots = new Map<string, string>()
  const outside = [...new Set(inputs.filter(i => i.parentId && !i.rootId).map(i => i.parentId!))]
    .filter(pid => !ids.includes(pid))
  if (outside.length > 0) {
    const rows = await tx.$queryRaw<Array<{ id: string, root_id: string }>>`
      SELECT id::text, root_id::text FROM jobs WHERE id = ANY(${outside}::uuid[])`
    for (const r of rows) roots.set(r.id, r.root_id)
  }
  const rootIds = inputs.map((input, k) => {
    let root = input.rootId ?? ids[k]
    if (input.parentId && !input.rootId) {
      const r = roots.get(input.parentId)
      if (!r) throw new Error(`enqueueJob: parent job ${input.parentId} does not exist`)
      root = r
    }
    roots.set(ids[k], root)
    return root
  })
  const now = new Date().toISOString()
  const owners = inputs.map(i => i.ownerId)
  const operations = inputs.map(i => i.operation)
  const params = inputs.map(i => JSON.stringify(i.params ?? {}))
  const parents = inputs.map(i => i.parentId ?? null)
  const resources = inputs.map(i => JSON.stringify((i.resources ?? []).map(r => uri(r.type, r.id))))
  const bytesTotal = inputs.map(i => i.bytesTotal === undefined ? null : String(Math.floor(i.bytesTotal)))
  const descriptions = inputs.map(i => i.description ?? null)
  const runAt = inputs.map(i => (i.runAt ?? null)?.toISOString() ?? now)
  const maxAttempts = inputs.map(i => i.maxAttempts ?? 3)
  await tx.$executeRaw`
    INSERT INTO jobs (id, owner_id, operation, state, params, parent_id, root_id, resources, bytes_total, description, run_at, max_attempts)
    SELECT x.id, x.o, x.op, 'queued', x.p::jsonb, x.par, x.root, ARRAY(SELECT jsonb_array_elements_text(x.res::jsonb)),
           x.bt::bigint, x.d, x.ra::timestamptz, x.ma
    FROM unnest(${ids}::uuid[], ${owners}::uuid[], ${operations}::text[], ${params}::text[], ${parents}::uuid[], ${rootIds}::uuid[],
                ${resources}::text[], ${bytesTotal}::text[], ${descriptions}::text[], ${runAt}::text[], ${maxAttempts}::int[])
      AS x(id, o, op, p, par, root, res, bt, d, ra, ma)`
  const links = inputs.flatMap((i, k) => (i.resources ?? []).map(r => ({ job: ids[k], type: r.type, id: r.id, mode: r.mode ?? 'write' })))
  if (links.length > 0) {
    await tx.$executeRaw`
      INSERT INTO job_resources (job_id, resource_type, resource_id, mode)
      SELECT * FROM unnest(${links.map(l => l.job)}::uuid[], ${links.map(l => l.type)}::text[], ${links.map(l => l.id)}::uuid[], ${links.map(l => l.mode)}::text[])`
  }
  // delivered when the transaction commits: wakes idle workers in every process
  await tx.$executeRaw`SELECT pg_notify(${JOBS_CHANNEL}, ${ids[0]})`
  const seen = new Set<string>()
  const changes: Array<{ ownerId: string, resourceType: 'jobs', resourceId: string, change: 'added' | 'changed' }> = []
  inputs.forEach((input, k) => {
    for (const id of [ids[k], rootIds[k]]) {
      if (seen.has(id)) continue
      seen.add(id)
      // the new job, and its root (whose roll-up moved) when that existed before
      changes.push({ ownerId: input.ownerId, resourceType: 'jobs', resourceId: id, change: id === ids[k] ? 'added' : 'changed' })
    }
  })
  await publishChange(tx, changes)
  return ids.map(id => ({ id }))
}
