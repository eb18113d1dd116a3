// drive_download: the bytes leave in an HTTP request (src/features/transfers/), so a worker only
// runs this handler when a one-time link was not started in time (the job is cancelled), or when
// the process sending a download died (the job fails).
import { cancelUnusedDownload } from '../download-jobs.ts'
import { JobFailure, type JobHandler } from '../../../engine/types.ts'

/** How long to wait for our own cancel request to come back as an abort before failing instead. */
const CANCEL_WAIT_MS = 10_000

const EXPIRED = 'the one-time download link expired unused'

export function driveDownloadHandler (): JobHandler {
  return {
    async run (ctx) {
      if (ctx.job.params.mode === 'link' && ctx.job.attempts <= 1 && await cancelUnusedDownload(ctx.prisma, ctx.job.id)) {
        ctx.log('the one-time download link was not used before it expired; the job is cancelled')
        ctx.progress({ description: EXPIRED })
        // the cancel NOTIFY (or the next heartbeat) aborts us; the engine then records `cancelled`
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, CANCEL_WAIT_MS)
          ctx.signal.addEventListener('abort', () => { clearTimeout(timer); resolve() }, { once: true })
        })
        // the engine records `cancelled` with this message once our cancel request aborted us
        throw new JobFailure(EXPIRED, 'cancelled')
      }
      throw new JobFailure('the download was interrupted: the process sending it stopped')
    },
    async cleanup (ctx) {
      // nothing can start this download any more; fenced by this attempt (`last`): a stale one
      // (taken over since the engine checked its fence) gets LeaseLost and uses up no link
      await ctx.fenced(async (tx) => {
        await tx.transferLink.updateMany({ where: { jobId: ctx.job.id, usedAt: null }, data: { usedAt: new Date() } })
      }, { last: true })
    }
  }
}
