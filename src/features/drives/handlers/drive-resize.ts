// drive_resize: sets the image to the new size, then the drive shows it and returns to its
// resting status. A failure leaves the drive at whatever size its image really has.
import { isStorageError, type DriveStorage } from '../../../storage/index.ts'
import { announceDrives, restingStatusOf } from '../service.ts'
import { JobFailure, type JobHandler } from '../../../engine/types.ts'
import { driveJobParams } from './drive-params.ts'

export function driveResizeHandler (storage: DriveStorage): JobHandler {
  return {
    resumable: true,
    async run (ctx) {
      const { driveId, size } = driveJobParams(ctx, true)
      const drive = await ctx.prisma.drive.findUnique({ where: { id: driveId } })
      if (!drive || drive.lockedByJob !== ctx.job.id) throw new JobFailure('the drive is no longer held by this job')
      // a stale attempt (a newer one took the job over) must not resize the image under it: the
      // fence asks the database; the guard asks the lease's clock again right before the truncate
      // (a process held up after its fence, past its lease, must not shrink a drive that the
      // newer attempt has settled and a later resize has grown since)
      await ctx.fence()
      try {
        await storage.resize(driveId, size, ctx.signal, ctx.guard)
      } catch (err) {
        if (isStorageError(err, 'NOT_FOUND')) throw new JobFailure('the drive has no data to resize')
        throw err
      }
      // fenced by this attempt: a stale one gets LeaseLost and commits nothing
      await ctx.fenced(async (tx) => {
        const status = await restingStatusOf(tx, driveId)
        const done = await tx.drive.updateMany({
          where: { id: driveId, lockedByJob: ctx.job.id },
          data: { size: BigInt(size), status, lockedByJob: null }
        })
        if (done.count === 0) throw new JobFailure('the drive is no longer held by this job')
        await announceDrives(tx, ctx.job.ownerId, [driveId])
      }, { last: true })
      // what was done replaces "resizing from ..." (the drive row still had the old size above)
      ctx.progress({ description: `resized from ${drive.size} to ${size} bytes` })
      return { size }
    },
    async cleanup (ctx) {
      const { driveId } = driveJobParams(ctx, false)
      const drive = await ctx.prisma.drive.findUnique({ where: { id: driveId } })
      if (!drive || drive.lockedByJob !== ctx.job.id) return
      // the size shown must be the size of the data, whichever side of the resize it is on
      const actual = await storage.stat(driveId).then(s => s.size, () => Number(drive.size))
      // fenced by this attempt: a stale one (taken over since the engine checked its fence) gets
      // LeaseLost and settles nothing; the drive is the newer attempt's to settle
      await ctx.fenced(async (tx) => {
        const status = await restingStatusOf(tx, driveId)
        await tx.drive.updateMany({ where: { id: driveId, lockedByJob: ctx.job.id }, data: { size: BigInt(actual), status, lockedByJob: null } })
        await announceDrives(tx, ctx.job.ownerId, [driveId])
      }, { last: true })
    }
  }
}
