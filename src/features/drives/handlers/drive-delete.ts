// drive_delete: the row is already hidden (deleted = true); this removes the image and then the
// row. A failure brings the drive back as it was when its image still exists.
import type { DriveStorage } from '../../../storage/index.ts'
import { announceDrives, restingStatusOf } from '../service.ts'
import { fenceCte, fenceParams } from '../../../engine/queue-sql.ts'
import { JobFailure, type JobHandler } from '../../../engine/types.ts'
import { driveJobParams } from './drive-params.ts'

// the row goes only while this job holds it and this attempt owns the job (its fence CTE)
const DELETE_ROW = `
  WITH ${fenceCte(3)},
  d AS (DELETE FROM drives WHERE id = $1::uuid AND locked_by_job = $2::uuid AND EXISTS (SELECT 1 FROM fence) RETURNING 1)
  SELECT (SELECT count(*)::int FROM fence) AS fenced, (SELECT count(*)::int FROM d) AS done`

export function driveDeleteHandler (storage: DriveStorage): JobHandler {
  return {
    resumable: true,
    async run (ctx) {
      const { driveId } = driveJobParams(ctx, false)
      const drive = await ctx.prisma.drive.findUnique({ where: { id: driveId } })
      if (drive && drive.lockedByJob !== ctx.job.id) throw new JobFailure('the drive is no longer held by this job')
      // the fence before the irreversible step, and the guard right before the image goes: a stale
      // attempt (a newer one took the job over, and may be bringing the drive back) gets LeaseLost
      // and deletes nothing, also when it was held up between the two (as in drive_resize)
      await ctx.fence()
      await storage.delete(driveId, ctx.guard)
      // one statement fenced by this attempt (a row already gone is a rerun's: nothing to do)
      await ctx.fencedStatement(async (fence) =>
        (await ctx.prisma.$queryRawUnsafe<Array<{ fenced: number }>>(DELETE_ROW, driveId, ctx.job.id, ...fenceParams(fence)))[0])
      ctx.progress({ description: 'deleted the drive and its image' })
      return null
    },
    async cleanup (ctx) {
      const { driveId } = driveJobParams(ctx, false)
      const drive = await ctx.prisma.drive.findUnique({ where: { id: driveId } })
      if (!drive || drive.lockedByJob !== ctx.job.id) return
      const intact = await storage.exists(driveId).catch(() => false)
      // fenced by this attempt: a stale one (taken over since the engine checked its fence) gets
      // LeaseLost and neither brings the drive back nor deletes its row
      await ctx.fenced(async (tx) => {
        if (intact) {
          const status = await restingStatusOf(tx, driveId)
          await tx.drive.updateMany({ where: { id: driveId, lockedByJob: ctx.job.id }, data: { deleted: false, status, lockedByJob: null } })
        } else {
          await tx.drive.deleteMany({ where: { id: driveId, lockedByJob: ctx.job.id } })
        }
        await announceDrives(tx, ctx.job.ownerId, [driveId])
      }, { last: true })
    }
  }
}
