// drive_create: makes the sparse image, then the drive leaves `creating`. A failure removes the
// row and any file, so nothing half-made remains.
import type pg from 'pg'
import type { DriveStorage } from '../../../storage/index.ts'
import { publishEventsSql } from '../../../engine/events.ts'
import { fenceCte, fenceParams } from '../../../engine/queue-sql.ts'
import { LeaseLost } from '../../../engine/held.ts'
import { announceDrives, restingStatusSql } from '../service.ts'
import { recordImageRemovals, removeOrphanImage, removeRecordedImages } from '../image-removals.ts'
import { JobFailure, type JobHandler } from '../../../engine/types.ts'
import { driveJobParams } from './drive-params.ts'

// The drive leaves `creating` for its resting status (restingStatus: mounted when a server mounts
// it), only while this job still holds it and this attempt still owns the job (the fence CTE locks
// its row: a stale attempt writes nothing, a claim waits for the commit), with its change event and
// NOTIFY: one statement, one round trip on the shared pool (issue 18), not a four-statement transaction.
const FINISH = `
  WITH ${fenceCte(4)},
  d AS (
    UPDATE drives SET status = ${restingStatusSql('$1')},
                      locked_by_job = NULL, updated_at = $3::timestamptz
    WHERE id = $1::uuid AND locked_by_job = $2::uuid AND EXISTS (SELECT 1 FROM fence)
    RETURNING id, owner_id
  ), ${publishEventsSql(`
    SELECT owner_id, 'drives' AS resource_type, id::text AS resource_id, 'changed' AS change FROM d`)}
  SELECT (SELECT count(*)::int FROM fence) AS fenced, (SELECT count(*)::int FROM d) AS done, (SELECT n FROM notified) AS notified`

export function driveCreateHandler (storage: DriveStorage, pool: pg.Pool): JobHandler {
  return {
    // every step is idempotent, so a job taken over after a crash simply runs again
    resumable: true,
    async run (ctx) {
      const { driveId, size } = driveJobParams(ctx, true)
      const held = await pool.query('SELECT 1 FROM drives WHERE id = $1::uuid AND locked_by_job = $2::uuid', [driveId, ctx.job.id])
      if (held.rowCount === 0) throw new JobFailure('the drive is no longer held by this job')
      // a stale attempt (a newer one took the job over, and may have failed and removed the drive
      // since) makes no image: it would be left behind, an orphan
      await ctx.fence()
      const made = !await storage.exists(driveId)
      if (made) await storage.create(driveId, size)
      // an image an earlier attempt made: to the size asked for, with the guard right before the
      // truncate (a process held up here past its lease must not cut a drive that the newer
      // attempt has finished and a resize has grown since, as in drive_resize)
      else await storage.resize(driveId, size, ctx.signal, ctx.guard)
      // a stale attempt (a newer one took the job over) gets LeaseLost here, from its heartbeat's
      // abort or from the fenced statement, and writes nothing
      let done: number
      try {
        ctx.signal.throwIfAborted()
        const finished = await ctx.fencedStatement(async (fence) =>
          (await pool.query<{ fenced: number, done: number }>(FINISH, [driveId, ctx.job.id, new Date().toISOString(), ...fenceParams(fence)])).rows[0])
        done = finished.done
      } catch (err) {
        // taken over between the fence and here (this process froze): the image this attempt made
        // is removed only once the drive's row is gone (the newer attempt failed and cleaned up
        // before it was made); while the row exists the image is the newer attempt's
        if (err instanceof LeaseLost && made) await removeOrphanImage({ prisma: ctx.prisma, storage, log: ctx.logger }, driveId, 'drive_create: the image of a stale attempt')
        throw err
      }
      if (done === 0) throw new JobFailure('the drive is no longer held by this job')
      ctx.progress({ description: `created a ${size} byte drive` })
      return { size }
    },
    async cleanup (ctx) {
      const { driveId } = driveJobParams(ctx, false)
      // the row goes first, only while this attempt still owns the job (fenced, `last`): a stale
      // attempt (taken over since the engine checked its fence) gets LeaseLost there and so never
      // reaches the image, which may be the newer attempt's. The image is recorded for removal in
      // that transaction and goes after its commit; when that delete fails (or this process dies
      // first) the sweeper retries it: nothing half-made stays
      const ours = await ctx.fenced(async (tx) => {
        const drive = await tx.drive.findUnique({ where: { id: driveId }, select: { lockedByJob: true } })
        if (drive && drive.lockedByJob !== ctx.job.id) return false
        if (drive) {
          await tx.drive.deleteMany({ where: { id: driveId, lockedByJob: ctx.job.id } })
          await announceDrives(tx, ctx.job.ownerId, [driveId])
        }
        await recordImageRemovals(tx, [driveId], 'drive_create cleanup')
        return true
      }, { last: true })
      if (ours) await removeRecordedImages({ prisma: ctx.prisma, storage, log: ctx.logger }, [driveId])
    }
  }
}
