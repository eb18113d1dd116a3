// drive_flatten: on storage with copy-on-write clones (rbd), detaches a cloned drive from its
// source in the background with byte progress. The drive is usable throughout; cancelling (or a
// failure) leaves it a valid clone, so there is nothing to undo. A child of its drive_clone job.
import { copiedDescription, copyDescription } from '../../../domain/clone-plan.ts'
import { isStorageError, type DriveStorage } from '../../../storage/index.ts'
import { fenceCte, fenceParams } from '../../../engine/queue-sql.ts'
import { IncompleteParams, JobFailure, type JobHandler } from '../../../engine/types.ts'

const TOUCH = `
  WITH ${fenceCte(3)},
  d AS (UPDATE drives SET updated_at = $2::timestamptz WHERE id = $1::uuid AND EXISTS (SELECT 1 FROM fence) RETURNING 1)
  SELECT (SELECT count(*)::int FROM fence) AS fenced, (SELECT count(*)::int FROM d) AS done`

export function driveFlattenHandler (storage: () => DriveStorage): JobHandler {
  return {
    resumable: true,
    async run (ctx) {
      const driveId = (ctx.job.params as { driveId?: unknown }).driveId
      if (typeof driveId !== 'string') throw new IncompleteParams()
      const s = storage()
      if (s.flatten === undefined) return { flattened: false }
      let total = 0
      const t0 = performance.now()
      ctx.log(`flattening drive ${driveId}: copying the data it shares with its source`)
      ctx.progress({ extra: { method: 'rbd flatten', phase: 'flatten' } })
      try {
        await s.flatten(driveId, {
          signal: ctx.signal,
          onProgress: (done, all) => {
            total = all
            ctx.progress({ bytesDone: done, bytesTotal: all, description: copyDescription(done, all) })
          }
        })
      } catch (err) {
        if (isStorageError(err, 'NOT_FOUND')) throw new JobFailure(`drive ${driveId} no longer exists`)
        if (isStorageError(err, 'IO')) throw new JobFailure(`flattening drive ${driveId} failed: ${err.message}`)
        throw err
      }
      const seconds = (performance.now() - t0) / 1000
      ctx.log(`flattened in ${Math.round(seconds * 1000)} ms (${total} bytes)`)
      ctx.progress({ description: copiedDescription(total, total, seconds, 'flattened'), extra: { method: 'rbd flatten', phase: 'done' } })
      // the image now holds its own data: a newer row version makes the cached allocated_size
      // stale, so the next read measures it again (features/drives/allocated.ts)
      // (one statement fenced by this attempt: a stale one gets LeaseLost, and the job is the newer one's)
      await ctx.fencedStatement(async (fence) =>
        (await ctx.prisma.$queryRawUnsafe<Array<{ fenced: number }>>(TOUCH, driveId, new Date(), ...fenceParams(fence)))[0])
      return { flattened: true, bytes: total }
    }
  }
}
