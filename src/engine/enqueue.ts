// Creating jobs, always inside the caller's transaction, so a job row exists exactly when the
// domain change that needs it was committed.
import { randomUUID } from 'node:crypto'
import type { Tx } from '../db/client.ts'
import { uri } from '../domain/uris.ts'
import { notifyEventsSql } from './events.ts'
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
 * Enqueues many jobs in the caller's transaction in one statement whatever their count (two when
 * a parent is outside `inputs`): the jobs, their resources, their change events (each job once,
 * each root once) with their NOTIFYs, and one wake-up NOTIFY. The rows travel as JSON, one
 * parameter each, so a batch costs the database a few rows per job and the client almost nothing.
 * Parents come before their children in `inputs` (or already exist). A job's `created` is when
 * its row is written, not when the caller's transaction began (a request that does more work
 * before enqueueing would otherwise show that work as time spent in the queue).
 */
export async function enqueueJobs (tx: Tx, inputs: EnqueueInput[]): Promise<Array<{ id: string }>> {
  if (inputs.length === 0) return []
  const ids = inputs.map(i => i.id ?? randomUUID())
  const roots = new Map<string, string>()
  const own = new Set(ids)
  const outside = [...new Set(inputs.filter(i => i.parentId && !i.rootId).map(i => i.parentId!))]
    .filter(pid => !own.has(pid))
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
  const jobs = inputs.map((i, k) => ({
    n: k,
    id: ids[k],
    o: i.ownerId,
    op: i.operation,
    p: i.params ?? {},
    par: i.parentId ?? null,
    root: rootIds[k],
    res: (i.resources ?? []).map(r => uri(r.type, r.id)),
    bt: i.bytesTotal === undefined ? null : Math.floor(i.bytesTotal),
    d: i.description ?? null,
    ra: (i.runAt ?? null)?.toISOString() ?? now,
    ma: i.maxAttempts ?? 3
  }))
  const links = inputs.flatMap((i, k) => (i.resources ?? []).map(r => ({ job: ids[k], t: r.type, id: r.id, m: r.mode ?? 'write' })))
  // change events: each job once, each root once, in the order of `inputs`
  const seen = new Set<string>()
  const changes: Array<{ n: number, o: string, r: string, c: 'added' | 'changed' }> = []
  inputs.forEach((input, k) => {
    for (const id of [ids[k], rootIds[k]]) {
      if (seen.has(id)) continue
      seen.add(id)
      // the new job, and its root (whose roll-up moved) when that existed before
      changes.push({ n: changes.length, o: input.ownerId, r: id, c: id === ids[k] ? 'added' : 'changed' })
    }
  })
  // Unsafe only in name: constant text (the NOTIFY SELECT is a constant fragment); every value is bound as $n
  await tx.$queryRawUnsafe(`
    WITH j AS (
      INSERT INTO jobs (id, owner_id, operation, state, params, parent_id, root_id, resources, bytes_total, description, run_at, max_attempts, created, last_modified)
      SELECT x.id, x.o, x.op, 'queued', x.p, x.par, x.root, x.res, x.bt, x.d, x.ra, x.ma, clock_timestamp(), clock_timestamp()
      FROM json_to_recordset($1::json) AS x(n int, id uuid, o uuid, op text, p jsonb, par uuid, root uuid, res text[], bt bigint, d text, ra timestamptz, ma int)
      ORDER BY x.n
      RETURNING id
    ),
    l AS (
      INSERT INTO job_resources (job_id, resource_type, resource_id, mode)
      SELECT l.job, l.t, l.id, l.m FROM json_to_recordset($2::json) AS l(job uuid, t text, id uuid, m text)
      RETURNING job_id
    ),
    e AS (
      INSERT INTO events (owner_id, resource_type, resource_id, resource_uri, change)
      SELECT c.o, 'jobs', c.r, '/api/2.0/jobs/' || c.r || '/', c.c
      FROM json_to_recordset($3::json) AS c(n int, o uuid, r text, c text)
      ORDER BY c.n
      RETURNING id, owner_id, resource_type, resource_id, change
    ),
    notified AS (${notifyEventsSql('e')})
    SELECT (SELECT count(*) FROM j)::int AS jobs, (SELECT count(*) FROM l)::int AS links,
      (SELECT count(*) FROM notified)::int AS notified,
      -- delivered when the transaction commits: wakes idle workers in every process
      pg_notify($4, $5)::text AS woken`,
  JSON.stringify(jobs), JSON.stringify(links), JSON.stringify(changes), JOBS_CHANNEL, ids[0])
  return ids.map(id => ({ id }))
}
