// drive_clone: copies the source image onto the destination drive (sparse, with byte progress and
// abort), then the destination leaves `cloning_dst` (unmounted, or mounted when a server clone
// attached it) and the source loses one reader. A failed or cancelled clone deletes the
// destination (file, mounts, row); the source only loses its reader. Rerunning after a takeover
// is safe: the storage copy replaces a partial destination, and the reader is released once.
// On copy-on-write storage (rbd) the copy is a clone, detached later by a drive_flatten child.
import type { PrismaClient, Tx } from '../../../db/client.ts'
import { copiedDescription, copyDescription } from '../../../domain/clone-plan.ts'
import { formatBytes } from '../../../domain/progress.ts'
import type { CopyStats } from '../../../storage/index.ts'
import { announceDrives, restingStatusOf } from '../../drives/service.ts'
import { recordImageRemovals, removeOrphanImage, removeRecordedImages } from '../../drives/image-removals.ts'
import { LeaseLost } from '../../../engine/held.ts'
import { isStorageError, type DriveStorage } from '../../../storage/index.ts'
import { enqueueJob } from '../../../engine/enqueue.ts'
import { CHANNELS } from '../../../engine/listener.ts'
import { IncompleteParams, JobFailure, type JobContext, type JobHandler } from '../../../engine/types.ts'

type Db = PrismaClient | Tx

export interface DriveCloneParams {
  sourceId: string
  driveId: string
  size: number
  /** Position among the children of a server clone (held children start in this order). */
  index?: number
}

export function driveCloneParams (ctx: JobContext): DriveCloneParams {
  const p = ctx.job.params as Partial<DriveCloneParams>
  if (typeof p.sourceId !== 'string' || typeof p.driveId !== 'string' || typeof p.size !== 'number') {
    throw new IncompleteParams()
  }
  return { sourceId: p.sourceId, driveId: p.driveId, size: p.size, index: p.index }
}

/**
 * Gives back the source reader this job took, exactly once however often it is called (success,
 * cleanup, a parent's cleanup, a rerun): the job's checkpoint records it in the same transaction.
 */
export async function releaseSource (tx: Tx, jobId: string, sourceId: string): Promise<boolean> {
  const marked = await tx.$executeRaw`
    UPDATE jobs SET checkpoint = CASE WHEN jsonb_typeof(checkpoint) = 'object' THEN checkpoint ELSE '{}'::jsonb END
      || '{"sourceReleased": true}'::jsonb
    WHERE id = ${jobId}::uuid AND (jsonb_typeof(checkpoint) IS DISTINCT FROM 'object' OR checkpoint->>'sourceReleased' IS DISTINCT FROM 'true')`
  if (marked === 0) return false
  await tx.$executeRaw`UPDATE drives SET readers = readers - 1 WHERE id = ${sourceId}::uuid AND readers > 0`
  return true
}

/**
 * Lets the next held-back sibling of a server clone start (parallelism limit): the earliest
 * queued child whose run_at is still in the far future becomes due now, and workers are woken.
 */
export async function releaseNextSibling (db: Db, parentId: string | null): Promise<void> {
  if (!parentId) return
  const rows = await db.$queryRaw<Array<{ id: string }>>`
    UPDATE jobs SET run_at = now(), last_modified = now()
    WHERE id = (
      SELECT id FROM jobs
      WHERE parent_id = ${parentId}::uuid AND state = 'queued' AND run_at > now() + interval '100 years'
      ORDER BY COALESCE((params->>'index')::int, 0), created, id
      LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING id::text`
  for (const r of rows) await db.$executeRaw`SELECT pg_notify(${CHANNELS.jobs}, ${r.id})`
}

function failureOf (err: unknown, p: DriveCloneParams): unknown {
  if (!isStorageError(err)) return err
  switch (err.code) {
    case 'ABORTED': case 'UNAVAILABLE': return err
    case 'NOT_FOUND': return new JobFailure(`the data of source drive ${p.sourceId} is missing`)
    case 'EXISTS': return new JobFailure(`another copy to drive ${p.driveId} is running`)
    default: return new JobFailure(`copying drive ${p.sourceId} failed: ${err.message}`)
  }
}

/**
 * Deletes the destination of the job (row, mounts, data) if the job still holds it, fenced by the
 * attempt. The row goes first, in the attempt's fenced transaction (`last`): a stale attempt gets
 * LeaseLost there and so never reaches the image, which may be the newer attempt's copy. The image
 * is recorded for removal in that transaction and goes only after its commit; if deleting it fails
 * (or the process dies first) the sweeper retries it, so nothing half-made is left.
 */
async function removeDestination (ctx: JobContext, storage: DriveStorage, driveId: string): Promise<void> {
  const jobId = ctx.job.id
  const ours = await ctx.fenced(async (tx) => {
    const drive = await tx.drive.findUnique({ where: { id: driveId }, select: { lockedByJob: true } })
    if (drive && drive.lockedByJob !== jobId) return false
    if (drive) {
      // server_drives rows go with the row (ON DELETE CASCADE)
      await tx.drive.deleteMany({ where: { id: driveId, lockedByJob: jobId } })
      await announceDrives(tx, ctx.job.ownerId, [driveId])
    }
    await recordImageRemovals(tx, [driveId], 'drive_clone cleanup')
    return true
  }, { last: true })
  if (ours) await removeRecordedImages({ prisma: ctx.prisma, storage, log: ctx.logger }, [driveId])
}

export function driveCloneHandler (storage: () => DriveStorage): JobHandler {
  return {
    resumable: true,
    async run (ctx) {
      const p = driveCloneParams(ctx)
      const { prisma } = ctx
      const dst = await prisma.drive.findUnique({ where: { id: p.driveId } })
      if (!dst) throw new JobFailure(`the destination drive ${p.driveId} no longer exists`)
      if (dst.lockedByJob !== ctx.job.id) {
        // a rerun after the previous attempt finished everything but recording it
        const checkpoint = ctx.job.checkpoint as { sourceReleased?: boolean } | null
        if (dst.lockedByJob === null && checkpoint?.sourceReleased === true) return { size: Number(dst.size) }
        throw new JobFailure(`the destination drive ${p.driveId} is no longer held by this job`)
      }
      const src = await prisma.drive.findUnique({ where: { id: p.sourceId }, select: { id: true } })
      if (!src) throw new JobFailure(`the source drive ${p.sourceId} no longer exists`)
      let total = 0
      // copy-on-write storage (rbd): the clone is usable at once, a drive_flatten child detaches it
      const cow = storage().cloneCow !== undefined
      ctx.log(`cloning drive ${p.sourceId} onto drive ${p.driveId} (${formatBytes(p.size)})${cow ? ' as a copy-on-write clone' : ''}`)
      const t0 = performance.now()
      let stats: CopyStats | undefined
      try {
        if (cow) {
          ctx.progress({ extra: { method: 'rbd clone (copy-on-write)', phase: 'clone' } })
          // the guard before making the image: a stale attempt makes none
          await ctx.fence()
          await storage().cloneCow!(p.sourceId, p.driveId, { size: p.size })
          stats = { method: 'rbd clone (copy-on-write)', bytes: 0, copyMs: performance.now() - t0, fsyncMs: 0, renameMs: 0 }
        } else {
          ctx.progress({ extra: { phase: 'copy' } })
          await storage().copy(p.sourceId, p.driveId, {
            size: p.size,
            signal: ctx.signal,
            // this attempt's own partial file, renamed into place only while it still owns the job
            attempt: ctx.job.attempts,
            fenced: (commit) => ctx.fenced(async () => { await commit() }),
            guard: ctx.guard,
            onProgress: (done, all) => {
              total = all
              ctx.progress({ bytesDone: done, bytesTotal: all, description: copyDescription(done, all) })
            },
            onStats: (s) => { stats = s },
            onMethod: (method) => ctx.progress({ extra: { method, phase: 'copy' } })
          })
        }
      } catch (err) {
        const failure = failureOf(err, p)
        if (!ctx.signal.aborted) ctx.log(`copy failed after ${Math.round(performance.now() - t0)} ms: ${(failure as Error).message}`)
        throw failure
      }
      const ms = (n: number) => `${Math.round(n)} ms`
      if (stats) {
        ctx.log(`${cow ? 'cloned' : `copied ${formatBytes(stats.bytes)} of data`} with ${stats.method}: copy ${ms(stats.copyMs)}, fsync ${ms(stats.fsyncMs)}, rename ${ms(stats.renameMs)}`)
        ctx.progress({ extra: { method: stats.method, phase: 'settle' } })
      }
      const copiedAt = new Date().toISOString()
      const tSettle = performance.now()
      try {
        ctx.signal.throwIfAborted()
        // fenced by this attempt: a stale one gets LeaseLost and settles nothing (the destination, the
        // source's reader, the next sibling and the flatten child are the newer attempt's to settle)
        await ctx.fenced(async (tx) => {
          const status = await restingStatusOf(tx, p.driveId)
          const done = await tx.drive.updateMany({ where: { id: p.driveId, lockedByJob: ctx.job.id }, data: { status, lockedByJob: null } })
          if (done.count === 0) throw new JobFailure(`the destination drive ${p.driveId} is no longer held by this job`)
          await releaseSource(tx, ctx.job.id, p.sourceId)
          await releaseNextSibling(tx, ctx.job.parentId)
          await announceDrives(tx, ctx.job.ownerId, [p.sourceId, p.driveId])
          if (cow) {
            await enqueueJob(tx, {
              ownerId: ctx.job.ownerId,
              operation: 'drive_flatten',
              parentId: ctx.job.id,
              rootId: ctx.job.rootId,
              params: { driveId: p.driveId },
              // resize/delete wait (503) while it runs; mounting, starting and cloning do not
              resources: [{ type: 'drives', id: p.driveId, mode: 'read' }],
              description: `flattening drive ${p.driveId}`
            })
          }
        }, { last: true })
      } catch (err) {
        // taken over between the fence before the clone and here (this process froze): the clone this
        // attempt made is removed only once the drive's row is gone (the newer attempt failed, or was
        // cancelled, and cleaned up before the clone existed); while the row exists it is the newer
        // attempt's. A full copy leaves nothing: its partial is removed, never renamed into place.
        if (err instanceof LeaseLost && cow) await removeOrphanImage({ prisma, storage: storage(), log: ctx.logger }, p.driveId, 'drive_clone: the clone of a stale attempt')
        throw err
      }
      const settleMs = performance.now() - tSettle
      const seconds = (performance.now() - t0) / 1000
      ctx.log(`time split: queue wait ${ctx.job.queueWaitMs ?? 0} ms, copy ${ms(stats?.copyMs ?? 0)}, fsync ${ms(stats?.fsyncMs ?? 0)}, ` +
        `hash 0 ms (clones are not hashed), settle ${ms(settleMs + (stats?.renameMs ?? 0))}`)
      ctx.progress({
        description: cow ? `cloned ${formatBytes(p.size)} copy-on-write in ${seconds.toFixed(1)} s; flattening follows` : copiedDescription(total, p.size, seconds),
        extra: { method: stats?.method ?? null, phase: 'done' }
      })
      // copied_at: when the data was complete (the next held-back sibling may start from then on)
      return { size: p.size, bytes_copied: total, copied_at: copiedAt, ...(cow ? { copy_on_write: true } : {}) }
    },
    async cleanup (ctx) {
      const p = driveCloneParams(ctx)
      await removeDestination(ctx, storage(), p.driveId)
      // fenced too: a stale attempt neither releases the source's reader nor starts a sibling
      await ctx.fenced(async (tx) => {
        if (await releaseSource(tx, ctx.job.id, p.sourceId)) await announceDrives(tx, ctx.job.ownerId, [p.sourceId])
        await releaseNextSibling(tx, ctx.job.parentId)
      }, { last: true })
    }
  }
}
