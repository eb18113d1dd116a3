// drive_upload: the bytes arrive in HTTP requests (src/features/transfers/), so a worker only
// runs this handler in three cases:
// - a chunked upload received its last chunk, not every chunk through one process (so no
//   request knew the image's digest and the job was made due): hash the image, finish;
// - a chunked upload passed its idle deadline with chunks missing: fail, and cleanup removes it;
// - the process receiving a raw or multipart upload died (its lease expired): fail and remove it;
//   for an upload into an existing drive (mode multipart_into) remove only the scratch image
//   (params.scratch) and give the drive back with its old data: it existed before the upload;
//   unless it died after its commit point (the file complete, checkpoint `committed`): then the
//   scratch image replaces the drive's (if it has not yet) and the job succeeds with its sha256.
import type { DriveStorage } from '../../../storage/index.ts'
import { chunkCount } from '../../../domain/chunks.ts'
import { finishUploadedDrive } from '../service.ts'
import { announceDrives } from '../../drives/service.ts'
import { recordImageRemovals, removeRecordedImages } from '../../drives/image-removals.ts'
import type { Tx } from '../../../db/client.ts'
import { chunkedTimeSplit } from '../upload-chunked.ts'
import { committedUpload, releaseUploadInto, rollForwardUploadInto } from '../upload-into.ts'
import { formatBytes } from '../../../domain/progress.ts'
import { hashDrive } from '../streams.ts'
import { IncompleteParams, JobFailure, type JobHandler } from '../../../engine/types.ts'

interface UploadParams { driveId: string, mode: string, size?: number, chunkSize?: number, scratch?: string }

function params (raw: Record<string, unknown>): UploadParams {
  const { driveId, mode, size, chunkSize, scratch } = raw as Partial<Record<keyof UploadParams, unknown>>
  if (typeof driveId !== 'string' || typeof mode !== 'string') throw new IncompleteParams()
  return {
    driveId,
    mode,
    size: typeof size === 'number' ? size : undefined,
    chunkSize: typeof chunkSize === 'number' ? chunkSize : undefined,
    scratch: typeof scratch === 'string' ? scratch : undefined
  }
}

export function driveUploadHandler (storage: DriveStorage): JobHandler {
  return {
    // a chunked upload taken over mid-verification simply verifies again
    resumable: true,
    async run (ctx) {
      const p = params(ctx.job.params)
      const committed = p.mode === 'multipart_into' ? committedUpload(ctx.job.checkpoint) : undefined
      if (committed !== undefined && p.scratch !== undefined) {
        // the file was complete and replacing the drive's image when its process stopped: finish that
        const drive = await ctx.prisma.drive.findUnique({ where: { id: p.driveId } })
        if (!drive || drive.lockedByJob !== ctx.job.id || drive.status !== 'uploading') throw new JobFailure('the drive is no longer held by this upload')
        const how = await rollForwardUploadInto(storage, p.driveId, p.scratch, { attempt: ctx.job.attempts, fenced: (commit) => ctx.fenced(() => commit()), guard: ctx.guard })
        await ctx.fenced(async (tx) => finishUploadedDrive(tx, ctx.job.ownerId, p.driveId, ctx.job.id))
        ctx.log(`the process receiving this upload stopped after the file was complete (sha256 ${committed.sha256}); ${how === 'copied' ? 'its image replaced the drive\'s' : 'its image had already replaced the drive\'s'}`)
        ctx.progress({ description: `received ${formatBytes(committed.bytes)} into the drive (multipart); stored after a takeover`, extra: { phase: 'done' } })
        return { sha256: committed.sha256, bytes: committed.bytes }
      }
      if (p.mode !== 'chunked') throw new JobFailure('the upload was interrupted: the process receiving it stopped')
      const drive = await ctx.prisma.drive.findUnique({ where: { id: p.driveId } })
      if (!drive || drive.lockedByJob !== ctx.job.id || drive.status !== 'uploading') throw new JobFailure('the drive is no longer held by this upload')
      const size = Number(drive.size)
      const stored = await ctx.prisma.uploadChunk.count({ where: { driveId: p.driveId } })
      const total = p.chunkSize ? chunkCount(size, p.chunkSize) : Infinity
      if (stored < total) {
        throw new JobFailure(`the upload was abandoned: ${stored} of ${Number.isFinite(total) ? total : '?'} chunks arrived`, 'validation')
      }
      const t0 = performance.now()
      // the time the chunks took, up to the last one's record (this job then waited in the queue)
      const chunks = chunkedTimeSplit(ctx.job.params as Parameters<typeof chunkedTimeSplit>[0], undefined, Date.now() - (ctx.job.queueWaitMs ?? 0))
      ctx.progress({ description: 'all chunks received; computing the SHA-256 of the image', extra: { phase: 'hash' } })
      ctx.log(`all ${stored} chunks received; hashing the image`)
      const { sha256, bytes } = await hashDrive(storage, p.driveId, ctx.signal)
      const t1 = performance.now()
      ctx.signal.throwIfAborted()
      // fenced by this attempt: a stale one gets LeaseLost and finishes nothing
      await ctx.fenced(async (tx) => finishUploadedDrive(tx, ctx.job.ownerId, p.driveId, ctx.job.id), { last: true })
      const t2 = performance.now()
      // each chunk was fsynced when its request stored it
      ctx.log(`sha256 ${sha256} of ${bytes} bytes; ${chunks}; then queue wait ${ctx.job.queueWaitMs ?? 0} ms, hash ${Math.round(t1 - t0)} ms, settle ${Math.round(t2 - t1)} ms`)
      ctx.progress({ description: `received ${formatBytes(bytes)} in ${stored} chunks; hashed in ${((t1 - t0) / 1000).toFixed(1)} s`, extra: { phase: 'done' } })
      return { sha256, bytes }
    },
    async cleanup (ctx) {
      const p = params(ctx.job.params)
      // the drive existed before this upload: never delete it, only what the upload made
      // every row write is fenced by this attempt (`last`): a stale one (taken over since the engine
      // checked its fence) gets LeaseLost and writes nothing
      const fenced = <T>(fn: (tx: Tx) => Promise<T>) => ctx.fenced(fn, { last: true })
      if (p.mode === 'multipart_into') return releaseUploadInto(fenced, { prisma: ctx.prisma, storage, log: ctx.logger }, ctx.job.ownerId, p.driveId, ctx.job.id, p.scratch)
      // the new drive: its row goes first, fenced, so a stale attempt never reaches the image (which
      // may be the newer attempt's finished upload); the image is recorded for removal there and goes
      // after that commit, retried by the sweeper if that fails: nothing half-made
      const ours = await fenced(async (tx) => {
        const row = await tx.drive.findUnique({ where: { id: p.driveId }, select: { lockedByJob: true } })
        if (row && row.lockedByJob !== ctx.job.id) return false
        if (row) {
          await tx.transferLink.deleteMany({ where: { driveId: p.driveId } })
          await tx.drive.deleteMany({ where: { id: p.driveId, lockedByJob: ctx.job.id } })
          await announceDrives(tx, ctx.job.ownerId, [p.driveId])
        }
        await recordImageRemovals(tx, [p.driveId], 'drive_upload cleanup')
        return true
      })
      if (ours) await removeRecordedImages({ prisma: ctx.prisma, storage, log: ctx.logger }, [p.driveId])
    }
  }
}
