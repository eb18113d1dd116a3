// drive_delete: the row is already hidden (deleted = true); this removes the image and then the
// row. A failure brings the drive back as it was when its image still exists.
import type { DriveStorage } from '../../../storage/index.ts'
import { announceDrives, restingStatusOf } from '../service.ts'
import { JobFailure, type JobHandler } from '../../../engine/types.ts'
import { driveJobParams } from './drive-params.ts'

export function driveDeleteHandler (storage: DriveStorage): JobHandler {
  return {
    resumable: true,
    async run (ctx) {
      const { driveId } = driveJobParams(ctx, false)
      const drive = await ctx.prisma.drive.findUnique({ where: { id: driveId } })
      if (drive && drive.lockedByJob !== ctx.job.id) throw new JobFailure('the drive is no longer held by this job')
      await storage.delete(driveId)
      await ctx.prisma.drive.deleteMany({ where: { id: driveId, lockedByJob: ctx.job.id } })
      ctx.progress({ description: 'deleted the drive and its image' })
      return null
    },
    async cleanup (ctx) {
      const { driveId } = driveJobParams(ctx, false)
      const drive = await ctx.prisma.drive.findUnique({ where: { id: driveId } })
      if (!drive || drive.lockedByJob !== ctx.job.id) return
      const intact = await storage.exists(driveId).catch(() => false)
      await ctx.prisma.$transaction(async (tx) => {
        if (intact) {
          const status = await restingStatusOf(tx, driveId)
          await tx.drive.updateMany({ where: { id: driveId, lockedByJob: ctx.job.id }, data: { deleted: false, status, lockedByJob: null } })
        } else {
          await tx.drive.deleteMany({ where: { id: driveId, lockedByJob: ctx.job.id } })
        }
        await announceDrives(tx, ctx.job.ownerId, [driveId])
      })
    }
  }
}
