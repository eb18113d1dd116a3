// Multipart upload (POST /_upload/) into an existing drive (`uuid` in `data.params`): the file
// must be exactly the drive's size (the rule of the chunked and resumable protocols). It streams
// into a scratch image and replaces the drive's image only when complete (storage.copy renames a
// finished copy over it), so a failed upload leaves the drive's data as it was. Meanwhile the
// drive is `uploading`, held by one request-held drive_upload job (engine.enqueueHeld/hold).
import { randomUUID } from 'node:crypto'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { domainErrors } from '../../domain/errors.ts'
import type { TakenJob } from '../../engine/queue-sql.ts'
import { lockResources } from '../../engine/resources.ts'
import { announceDrives, assertDriveUsable, loadOwnedDrive, mountState, restingStatusOf } from '../drives/service.ts'
import { BodyTooLong, Meter } from './streams.ts'
import { type ClientError, type TransferDeps, failureRecord, finishUploadedDrive, streamFailure } from './service.ts'
import type { MultipartUpload } from './upload-multipart.ts'
import { newJobId } from '../../engine/enqueue.ts'

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
      params: { driveId: drive.id, size, mode: 'multipart_into' },
      resources: [{ type: 'drives', id: drive.id, mode: 'write' }],
      bytesTotal: size,
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
    await deps.storage.delete(scratch).catch(e => deps.log.warn({ err: e, image: scratch }, 'could not remove a failed upload\'s scratch image'))
    try {
      await deps.prisma.$transaction(async (tx) => {
        const status = await restingStatusOf(tx, id)
        await tx.drive.updateMany({ where: { id, lockedByJob: jobId }, data: { status, lockedByJob: null } })
        await announceDrives(tx, ownerId, [id])
      })
    } catch (e) {
      deps.log.error({ err: e, drive: id }, 'could not release a drive after a failed upload')
    }
    await held.fail(failureRecord(clientErr))
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
        meter = new Meter(size, true, (n) => held.progress(n))
        await pipeline(file, meter, await deps.storage.createWriteStream(scratch), { signal: held.signal })
        if (truncated()) throw domainErrors.tooLarge('The file is larger than the largest drive', 'file')
        if (meter.bytes !== size) throw domainErrors.validation(`The file holds ${meter.bytes} bytes; uploading into drive ${id} needs exactly its size, ${size} bytes`, 'file')
        received = { sha256: await meter.digest(), bytes: meter.bytes }
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
        // replaces the drive's image at once, and only with the complete file
        await deps.storage.copy(scratch, id)
        await deps.storage.delete(scratch)
        await deps.prisma.$transaction(async (tx) => {
          await finishUploadedDrive(tx, ownerId, id, jobId)
          await held.finish(tx, { state: 'success', result: { sha256, bytes } })
        })
      } catch (err) {
        throw await abort(err)
      }
      return { driveId: id, jobId, sha256, bytes }
    }
  }
}
