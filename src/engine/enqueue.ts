// Creating jobs: inside the caller's transaction, so a job row exists exactly when the domain
// change that needs it was committed, or (jobs that go with no domain change) on their own, one
// atomic statement per batch.
import { randomFillSync } from 'node:crypto'
import { v7 as uuidv7 } from 'uuid'
import type { PrismaClient, Tx } from '../db/client.ts'
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

/**
 * A new job id: a UUID (RFC 9562 version 7) whose first bits are the time, so new rows land at
 * the right edge of the jobs indexes that lead with the id (primary key, root) instead of on a
 * random page each. Its 74 random bits keep it unguessable enough for
 * an id (it is not a credential: every read is checked against the account).
 */
export function newJobId (): string {
  // random bits from a pooled buffer: one getRandomValues call per id costs more than the rest of it
  if (randomAt + 16 > randomPool.length) { randomFillSync(randomPool); randomAt = 0 }
  const id = uuidv7({ random: randomPool.subarray(randomAt, randomAt + 16) })
  randomAt += 16
  return id
}
const randomPool = Buffer.alloc(16 * 256)
let randomAt = randomPool.length

export async function enqueueJob (tx: Tx, input: EnqueueInput): Promise<{ id: string }> {
  const [job] = await enqueueJobs(tx, [input])
  return job
}

/**
 * Enqueues many jobs in the caller's transaction (`db` a transaction client), or on their own (`db`
 * the client: the statement is atomic by itself, one round trip), in one statement whatever their
 * count (two when a parent is outside `inputs`): the jobs, their resources, their change events (each job once,
 * each root once) with their NOTIFYs, and one wake-up NOTIFY. The rows travel as JSON, one
 * parameter each, so a batch costs the database a few rows per job and the client almost nothing.
 * Parents come before their children in `inputs` (or already exist). A job's `created` is when
 * its row is written, not when the caller's transaction began (a request that does more work
 * before enqueueing would otherwise show that work as time spent in the queue).
 */
export async function enqueueJobs (db: Tx | PrismaClient, inputs: EnqueueInput[]): Promise<Array<{ id: string }>> {
  if (inputs.length === 0) return []
  const given = new Set(inputs.map(i => i.id))
  const outsideParents = inputs.some(i => i.parentId && !i.rootId && !given.has(i.parentId))
  // outside a transaction the insert is one atomic statement of its own (one round trip); a parent
  // outside the batch is looked up first, so the two then go in a transaction of their own
  if ('$transaction' in db && outsideParents) return db.$transaction(tx => enqueueJobs(tx, inputs))
  const tx = db
  const ids = inputs.map(i => i.id ?? newJobId())
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
  // the rows travel as sparse JSON: what most jobs of a batch share (owner, operation) is sent once,
  // and a field at its default is left out; the change events are derived from the rows in SQL
  // (a batch of 500 jobs is ~30 KB instead of ~160 KB, which Prisma's raw path pays for by the byte)
  const owner = inputs[0].ownerId
  const operation = inputs[0].operation
  const jobs = inputs.map((i, k) => {
    const row: Record<string, unknown> = { id: ids[k] }
    if (i.ownerId !== owner) row.o = i.ownerId
    if (i.operation !== operation) row.op = i.operation
    if (i.params !== undefined && Object.keys(i.params).length > 0) row.p = i.params
    if (i.parentId) row.par = i.parentId
    if (rootIds[k] !== ids[k]) row.root = rootIds[k]
    if (i.resources !== undefined && i.resources.length > 0) row.res = i.resources.map(r => uri(r.type, r.id))
    if (i.bytesTotal !== undefined) row.bt = Math.floor(i.bytesTotal)
    if (i.description !== undefined) row.d = i.description
    if (i.runAt !== undefined) row.ra = i.runAt.toISOString()
    if (i.maxAttempts !== undefined) row.ma = i.maxAttempts
    return row
  })
  const links = inputs.flatMap((i, k) => (i.resources ?? []).map(r => ({ job: ids[k], t: r.type, id: r.id, m: r.mode ?? 'write' })))
  // Unsafe only in name: constant text (the NOTIFY SELECT is a constant fragment); every value is bound as $n
  await tx.$queryRawUnsafe(`
    WITH x AS MATERIALIZED (
      SELECT r.id, COALESCE(r.o, $5::uuid) AS o, COALESCE(r.op, $6::text) AS op, COALESCE(r.p, '{}') AS p, r.par,
        COALESCE(r.root, r.id) AS root, COALESCE(r.res, '{}') AS res, r.bt, r.d, COALESCE(r.ra, now()) AS ra,
        COALESCE(r.ma, 3) AS ma, r.n
      FROM ROWS FROM (json_to_recordset($1::json) AS (id uuid, o uuid, op text, p jsonb, par uuid, root uuid, res text[], bt bigint, d text, ra timestamptz, ma int))
        WITH ORDINALITY AS r(id, o, op, p, par, root, res, bt, d, ra, ma, n)
    ),
    j AS (
      INSERT INTO jobs (id, owner_id, operation, state, params, parent_id, root_id, resources, bytes_total, description, run_at, max_attempts, created, last_modified)
      SELECT x.id, x.o, x.op, 'queued', x.p, x.par, x.root, x.res, x.bt, x.d, x.ra, x.ma, clock_timestamp(), clock_timestamp()
      FROM x ORDER BY x.n
      RETURNING id
    ),
    l AS (
      INSERT INTO job_resources (job_id, resource_type, resource_id, mode)
      SELECT l.job, l.t, l.id, l.m FROM json_to_recordset($2::json) AS l(job uuid, t text, id uuid, m text)
      RETURNING job_id
    ),
    -- change events: each new job once ('added'), and the root of a job whose root existed before
    -- once ('changed': its roll-up moved), in the order of the rows
    c AS (
      SELECT x.n, 0 AS k, x.o, x.id AS r, 'added' AS c FROM x
      UNION ALL
      SELECT * FROM (
        SELECT DISTINCT ON (x.root) x.n, 1, x.o, x.root, 'changed' FROM x
        WHERE x.root <> x.id AND x.root NOT IN (SELECT id FROM x)
        ORDER BY x.root, x.n
      ) outside
    ),
    e AS (
      INSERT INTO events (owner_id, resource_type, resource_id, resource_uri, change)
      SELECT c.o, 'jobs', c.r::text, '/api/2.0/jobs/' || c.r || '/', c.c
      FROM c ORDER BY c.n, c.k
      RETURNING id, owner_id, resource_type, resource_id, change
    ),
    notified AS (${notifyEventsSql('e')})
    SELECT (SELECT count(*) FROM j)::int AS jobs, (SELECT count(*) FROM l)::int AS links,
      (SELECT count(*) FROM notified)::int AS notified,
      -- delivered when the transaction commits: wakes idle workers in every process
      pg_notify($3, $4)::text AS woken`,
  JSON.stringify(jobs), JSON.stringify(links), JOBS_CHANNEL, ids[0], owner, operation)
  return ids.map(id => ({ id }))
}
