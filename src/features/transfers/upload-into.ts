// Multipart upload (POST /_upload/) into an existing drive (`uuid` in `data.params`): the file
// must be exactly the drive's size (the rule of the chunked and resumable protocols). It streams
// into a scratch image and replaces the drive's image only when complete (storage.copy renames a
// finished copy over it), so a failed upload leaves the drive's data as it was. Meanwhile the
// drive is `uploading`, held by one request-held drive_upload job (engine.enqueueHeld/hold). The
// scratch image's id is in the job's params (`scratch`), so if this process dies the worker that
// takes the job over removes the scratch image and gives the drive back as it was
// (releaseUploadInto, called by the drive_upload handler's cleanup). Once the file is complete
// its sha256 is written ahead as the job's checkpoint (`committed`), the commit point: a process
// that dies after it is rolled forward instead (rollForwardUploadInto), and the job succeeds.
// An attempt whose lease is gone touches nothing.
import { randomUUID } from 'node:crypto'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { domainErrors } from '../../domain/errors.ts'
import { formatBytes } from '../../domain/progress.ts'
import type { TakenJob } from '../../engine/queue-sql.ts'
import { lockResources } from '../../engine/resources.ts'
import { announceDrives, assertDriveUsable, loadOwnedDrive, mountState, restingStatusOf } from '../drives/service.ts'
import { recordImageRemovals, removeRecordedImages, type ImageRemovalDeps } from '../drives/image-removals.ts'
import { BodyTooLong, Meter, yieldsSocketReads } from './streams.ts'
import { type ClientError, type TransferDeps, failureRecord, finishUploadedDrive, streamFailure, takenOver } from './service.ts'
import type { MultipartUpload } from './upload-multipart.ts'
import { newJobId } from '../../engine/enqueue.ts'
import { isStorageError, type DriveStorage } from '../../storage/index.ts'
import type { PrismaClient, Tx } from '../../db/client.ts'

/** The drive leaves `uploading` for its resting status, with its old data, if this job still holds it. */
async function restoreDrive (db: PrismaClient, ownerId: string, driveId: string, jobId: string, alsoInTx?: (tx: Tx) => Promise<void>): Promise<void> {
  await db.$transaction(async (tx) => {
    const status = await restingStatusOf(tx, driveId)
    await tx.drive.updateMany({ where: { id: driveId, lockedByJob: jobId }, data: { status, lockedByJob: null } })
    await announceDrives(tx, ownerId, [driveId])
    await alsoInTx?.(tx)
  })
}

/**
 * Undoes an upload into an existing drive whose process stopped (the drive_upload handler's
 * cleanup, after a takeover): gives the drive back, its data untouched, then removes the scratch
 * image (`scratch` from the job's params; absent in jobs enqueued before it was recorded). Never
 * deletes the drive: it existed before the upload. The drive is given back in `fenced` (the
 * attempt's fenced transaction) before the scratch image goes: a stale attempt gets LeaseLost there
 * and leaves the scratch image to the newer attempt (which may be rolling it forward); the image is
 * recorded for removal in that transaction, so a failed delete is retried by the sweeper.
 */
export async function releaseUploadInto (fenced: <T>(fn: (tx: Tx) => Promise<T>) => Promise<T>, deps: ImageRemovalDeps, ownerId: string, driveId: string, jobId: string, scratch: string | undefined): Promise<void> {
  const id = driveId.toLowerCase()
  const doomed = scratch !== undefined && scratch.toLowerCase() !== id ? [scratch] : []
  await fenced(async (tx) => {
    const status = await restingStatusOf(tx, id)
    await tx.drive.updateMany({ where: { id, lockedByJob: jobId }, data: { status, lockedByJob: null } })
    await announceDrives(tx, ownerId, [id])
    // the scratch image is nobody's once the drive is given back: a failed delete is retried by the sweeper
    await recordImageRemovals(tx, doomed, 'drive_upload cleanup (scratch image)')
  })
  await removeRecordedImages(deps, doomed)
}

/** The job's checkpoint once the file is complete and about to replace the drive's image. */
export interface UploadIntoCheckpoint { committed: { sha256: string, bytes: number } }

/** The commit point of an upload into a drive, if its job's checkpoint records one. */
export function committedUpload (checkpoint: unknown): UploadIntoCheckpoint['committed'] | undefined {
  const c = (checkpoint as Partial<UploadIntoCheckpoint> | null)?.committed
  return typeof c?.sha256 === 'string' && typeof c.bytes === 'number' ? c : undefined
}

/**
 * How a copy over the drive's image is fenced by its attempt: written to `<image>.partial.<attempt>`
 * and renamed into place only inside `fenced` (the attempt's job row locked), so a stale attempt
 * never replaces the image under a newer one (see storage CopyOptions).
 */
export interface FencedCopy { attempt: number, fenced: (commit: () => Promise<void>) => Promise<void>, guard: () => void }

/**
 * Finishes an upload into a drive whose process stopped after its commit point (the drive_upload
 * handler, after a takeover): the scratch image replaces the drive's image if it has not already
 * (it is removed only after the copy), and the drive goes back to its resting status.
 */
export async function rollForwardUploadInto (storage: DriveStorage, driveId: string, scratch: string, guard: FencedCopy): Promise<'copied' | 'already copied'> {
  if (!await storage.exists(scratch)) return 'already copied'
  try {
    await storage.copy(scratch, driveId.toLowerCase(), guard)
  } catch (err) {
    // the stopped attempt's own copy finished meanwhile, and removed the scratch image
    if (isStorageError(err, 'NOT_FOUND') && !await storage.exists(scratch)) return 'already copied'
    throw err
  }
  await storage.delete(scratch)
  return 'copied'
}

function failure (err: unknown, size: number): ClientError {
  // more bytes than the drive holds: the meter (or the fixed-size image) refuses them
  if (err instanceof BodyTooLong || err instanceof RangeError) {
    return domainErrors.validation(`The file is larger than the drive (${size} bytes); it must be exactly the drive's size`, 'file')
  }
  return streamFailure(err, 'file')
}

export async function startMultipartUploadInto (deps: TransferDeps, ownerId: string, driveId: string): Promise<MultipartUpload> {
  const jobId = newJobId()
  const scratch = randomUUID()
  let size = 0
  const row: TakenJob = await deps.prisma.$transaction(async (tx) => {
    const drive = await loadOwnedDrive(tx, ownerId, driveId, { lock: true })
    assertDriveUsable(drive, 'upload')
    if ((await mountState(tx, drive.id)).active) throw domainErrors.wrongState(`Drive ${drive.id} is mounted on a running server; stop the server to upload into it`)
    await lockResources(tx, [{ type: 'drives', id: drive.id, mode: 'write' }])
    size = Number(drive.size)
    await tx.drive.update({ where: { id: drive.id }, data: { status: 'uploading', lockedByJob: jobId } })
    const job = await deps.engine.enqueueHeld(tx, {
      id: jobId,
      ownerId,
      operation: 'drive_upload',
      // scratch: durable, so a takeover after this process dies can remove it (releaseUploadInto)
      params: { driveId: drive.id, size, mode: 'multipart_into', scratch },
      resources: [{ type: 'drives', id: drive.id, mode: 'write' }],
      bytesTotal: size,
      // a takeover after the commit point finishes the upload (and retries a transient failure)
      maxAttempts: 3,
      description: `receiving a ${size} byte image into the drive (multipart)`
    })
    await announceDrives(tx, ownerId, [drive.id])
    return job
  })
  const id = driveId.toLowerCase()
  const held = deps.engine.hold(row, size)
  let received: { sha256: string, bytes: number } | undefined

  /** The drive goes back to mounted/unmounted with its old data; the job fails. */
  const abort = async (err: unknown): Promise<ClientError> => {
    const clientErr = held.cancelled ? domainErrors.validation('The upload was cancelled') : failure(err, size)
    // the lease is gone: the job, its scratch image and the drive belong to a newer attempt now,
    // which undoes the upload, or finishes it if it was committed; this one touches nothing
    if (held.leaseGone) {
      deps.log.warn({ job: jobId, drive: id }, 'upload into a drive stopped: its job\'s lease was lost')
      return takenOver(jobId)
    }
    // the drive back and the failure recorded in one transaction; when that cannot commit, the
    // job is abandoned: the worker that takes it over once its lease runs out does both
    try {
      await restoreDrive(deps.prisma, ownerId, id, jobId, async (tx) => {
        // the scratch image is nobody's once the failure is recorded: a failed delete below is retried by the sweeper
        await recordImageRemovals(tx, [scratch], 'upload into a drive failed (scratch image)')
        await held.failIn(tx, failureRecord(clientErr))
      })
    } catch (e) {
      deps.log.error({ err: e, job: jobId, drive: id }, 'could not release a drive after a failed upload; a worker does once its job\'s lease runs out')
      held.abandon()
      return held.leaseGone ? takenOver(jobId) : clientErr
    }
    // the scratch image goes once the failure is recorded: until then a takeover may need it (a
    // committed upload is finished from it, and "no scratch image" means it was copied)
    await removeRecordedImages(deps, [scratch]).catch(e => deps.log.warn({ err: e, image: scratch }, 'could not remove a failed upload\'s scratch image'))
    return clientErr
  }

  try {
    await deps.storage.create(scratch, size)
  } catch (err) {
    throw await abort(err)
  }
  return {
    driveId: id,
    jobId,
    abort,
    receive: async (file: Readable, truncated: () => boolean) => {
      let meter: Meter | undefined
      try {
        const t0 = performance.now()
        meter = new Meter(size, true, (n) => held.progress(n), { move: yieldsSocketReads(file) })
        await pipeline(file, meter, await deps.storage.createWriteStream(scratch, { written: meter.written }), { signal: held.signal })
        if (truncated()) throw domainErrors.tooLarge('The file is larger than the largest drive', 'file')
        if (meter.bytes !== size) throw domainErrors.validation(`The file holds ${meter.bytes} bytes; uploading into drive ${id} needs exactly its size, ${size} bytes`, 'file')
        received = { sha256: await meter.digest(), bytes: meter.bytes }
        held.log(`stored ${formatBytes(meter.bytes)} in a scratch image, sha256 ${received.sha256}`)
        held.describe(`received ${formatBytes(meter.bytes)} into the drive in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
      } catch (err) {
        meter?.release()
        file.resume()
        throw await abort(err)
      }
    },
    commit: async () => {
      if (!received) throw await abort(domainErrors.validation('The form has no file', 'file'))
      const { sha256, bytes } = received
      try {
        // the commit point, written ahead: from here a worker that takes the job over (this
        // process died) finishes the upload from the scratch image instead of undoing it
        await held.checkpoint({ committed: { sha256, bytes } } satisfies UploadIntoCheckpoint)
        // replaces the drive's image at once, and only with the complete file, and only while
        // this attempt still owns the job (a takeover after the commit point rolls it forward itself)
        await deps.storage.copy(scratch, id, { attempt: held.row.attempts, fenced: (commit) => held.fenced(() => commit()), guard: () => held.guard() })
      } catch (err) {
        // the drive's image is as it was (the copy replaces it only when complete)
        throw await abort(err)
      }
      const left = await deps.storage.delete(scratch).then(() => false, (e: unknown) => {
        deps.log.warn({ err: e, image: scratch }, 'could not remove an upload\'s scratch image after its copy; the sweeper retries it')
        return true
      })
      try {
        await deps.prisma.$transaction(async (tx) => {
          // recorded with the job's end: until then a takeover rolls the upload forward from it
          if (left) await recordImageRemovals(tx, [scratch], 'upload into a drive stored (scratch image)')
          await finishUploadedDrive(tx, ownerId, id, jobId)
          await held.finish(tx, { state: 'success', result: { sha256, bytes } })
        })
      } catch (err) {
        // the drive holds the new image: never undone now; the job is finished by the worker that
        // takes it over once its lease expires (drive_upload's roll-forward)
        deps.log.warn({ err, job: jobId, drive: id }, 'an upload into a drive was stored but its end could not be recorded; a worker finishes its job')
        throw held.leaseGone ? takenOver(jobId) : failure(err, size)
      }
      return { driveId: id, jobId, sha256, bytes }
    }
  }
}
