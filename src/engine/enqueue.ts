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
  const id = input.id ?? randomUUID()
  const resources = input.resources ?? []
  let rootId = input.rootId ?? id
  if (input.parentId && !input.rootId) {
    const parent = await tx.job.findUnique({ where: { id: input.parentId }, select: { rootId: true } })
    if (!parent) throw new Error(`enqueueJob: parent job ${input.parentId} does not exist`)
    rootId = parent.rootId
  }
  await tx.job.create({
    data: {
      id,
      ownerId: input.ownerId,
      operation: input.operation,
      state: 'queued',
      params: (input.params ?? {}) as object,
      parentId: input.parentId ?? null,
      rootId,
      resources: resources.map(r => uri(r.type, r.id)),
      bytesTotal: input.bytesTotal === undefined ? null : BigInt(input.bytesTotal),
      description: input.description ?? null,
      runAt: input.runAt ?? new Date(),
      maxAttempts: input.maxAttempts ?? 3,
      links: { create: resources.map(r => ({ resourceType: r.type, resourceId: r.id, mode: r.mode ?? 'write' })) }
    }
  })
  // delivered when the transaction commits: wakes idle workers in every process
  await tx.$executeRaw`SELECT pg_notify(${JOBS_CHANNEL}, ${id})`
  await publishChange(tx, rootId === id
    ? { ownerId: input.ownerId, resourceType: 'jobs', resourceId: id }
    : [{ ownerId: input.ownerId, resourceType: 'jobs', resourceId: id }, { ownerId: input.ownerId, resourceType: 'jobs', resourceId: rootId }])
  return { id }
}
