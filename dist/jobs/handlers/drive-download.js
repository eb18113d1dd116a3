// drive_download: the bytes leave in an HTTP request (src/services/transfers.ts), so a worker only
// runs this handler when a one-time link was not started in time (the job is cancelled), or when
// the process sending a download died (the job fails).
import { cancelUnusedDownload } from "../../services/transfers.js";
import { JobFailure } from "../types.js";
/** How long to wait for our own cancel request to come back as an abort before failing instead. */
const CANCEL_WAIT_MS = 10_000;
export function driveDownloadHandler() {
    return {
        async run(ctx) {
            if (ctx.job.params.mode === 'link' && ctx.job.attempts <= 1 && await cancelUnusedDownload(ctx.prisma, ctx.job.id)) {
                // the cancel NOTIFY (or the next heartbeat) aborts us; the engine then records `cancelled`
                await new Promise((resolve) => {
                    const timer = setTimeout(resolve, CANCEL_WAIT_MS);
                    ctx.signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
                });
                throw new JobFailure('the download link was not used in time');
            }
            throw new JobFailure('the download was interrupted: the process sending it stopped');
        },
        async cleanup(ctx) {
            // nothing can start this download any more
            await ctx.prisma.transferLink.updateMany({ where: { jobId: ctx.job.id, usedAt: null }, data: { usedAt: new Date() } });
        }
    };
}
//# sourceMappingURL=drive-download.js.map