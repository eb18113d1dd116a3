// Raw upload (§5.1): the body is the image; Content-Length sets the drive size.
import { randomUUID } from 'node:crypto'
import { type Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { errors } from '../../http/errors.ts'
import type { TakenJob } from '../../engine/queue-sql.ts'
import { announceDrives } from '../drives/service.ts'
import { formatBytes } from '../../domain/progress.ts'
import { Meter, uploadTimeSplit, yieldsSocketReads } from './streams.ts'
import { type NewDriveInput, type TransferDeps, type UploadResult, checkUploadSize, createUploadingDrive, createUploadImage, removeImage, failUpload, finishUploadedDrive, streamFailure, takenOver } from './service.ts'
import { newJobId } from '../../engine/enqueue.ts'
import { pgTransaction } from '../../db/pg-transaction.ts'

// ---------------------------------------------------------------------------------------------
// Raw upload (§5.1): POST/PUT /drives/upload/[name] with Content-Length

export async function receiveRawUpload (deps: TransferDeps, ownerId: string, input: Omit<NewDriveInput, 'size'>, size: number, body: Readable): Promise<UploadResult> {
  checkUploadSize(deps, size, 'Content-Length')
  const driveId = randomUUID()
  const jobId = newJobId()
  await createUploadImage(deps, driveId, size)
  let row: TakenJob
  try {
    row = await pgTransaction(deps.pool, async (tx) => {
      await createUploadingDrive(tx, ownerId, driveId, jobId, { ...input, size })
      const job = await deps.engine.enqueueHeld(tx, {
        id: jobId,
        ownerId,
        operation: 'drive_upload',
        params: { driveId, size, mode: 'raw' },
        resources: [{ type: 'drives', id: driveId, mode: 'write' }],
        bytesTotal: size,
        description: `receiving a ${size} byte image`
      })
      await announceDrives(tx, ownerId, [driveId], 'added')
      return job
    })
  } catch (err) {
    await removeImage(deps, driveId)
    throw err
  }
  const held = deps.engine.hold(row, size)
  let meter: Meter | undefined
  try {
    const t0 = performance.now()
    held.log(`receiving a raw image of ${formatBytes(size)} into drive ${driveId} (sha256 computed as it is stored, on a worker thread)`)
    meter = new Meter(size, true, (n) => held.progress(n), { move: yieldsSocketReads(body) })
    await pipeline(body, meter, await deps.storage.createWriteStream(driveId, { written: meter.written }), { signal: held.signal })
    const stored = performance.now()
    if (meter.bytes !== size) throw errors.validation(`The body held ${meter.bytes} of the ${size} bytes announced by Content-Length`, 'Content-Length')
    const sha256 = await meter.digest()
    held.log(`stored ${formatBytes(size)}, sha256 ${sha256}`)
    held.describe(`received ${formatBytes(size)} in ${((stored - t0) / 1000).toFixed(1)} s`)
    await pgTransaction(deps.pool, async (tx) => {
      await finishUploadedDrive(tx, ownerId, driveId, jobId)
      held.log(uploadTimeSplit(meter!, t0, stored, performance.now()))
      await held.finish(tx, { state: 'success', result: { sha256, bytes: size } })
    })
    return { driveId, jobId, sha256, bytes: size }
  } catch (err) {
    meter?.release()
    const apiErr = held.cancelled ? errors.validation('The upload was cancelled') : streamFailure(err, 'body')
    body.resume() // drain what the client still sends, so the error answer can be read
    if (held.leaseGone) {
      // the drive and the job are a newer attempt's now, which removes the drive
      deps.log.warn({ job: jobId, drive: driveId }, 'a raw upload stopped: its job\'s lease was lost')
      throw takenOver(jobId)
    }
    await failUpload(deps, held, ownerId, driveId, apiErr)
    throw apiErr
  }
}
