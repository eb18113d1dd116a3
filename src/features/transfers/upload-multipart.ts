// Multipart upload (TrueNAS /_upload style): the size is known only when the file part ends.
import { randomUUID } from 'node:crypto'
import { type Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { errors } from '../../http/errors.ts'
import type { TakenJob } from '../../engine/queue-sql.ts'
import { query } from '../../db/sql.ts'
import { announceDrives } from '../drives/service.ts'
import { formatBytes } from '../../domain/progress.ts'
import { Meter, growingWriteStream, uploadTimeSplit, yieldsSocketReads } from './streams.ts'
import { type ClientError, type NewDriveInput, type TransferDeps, type UploadResult, createUploadingDrive, createUploadImage, removeImage, failUpload, finishUploadedDrive, streamFailure, takenOver, uploadMax } from './service.ts'
import { newJobId } from '../../engine/enqueue.ts'
import { pgTransaction } from '../../db/pg-transaction.ts'

// ---------------------------------------------------------------------------------------------
// Multipart upload (TrueNAS /_upload style): size unknown until the file part ends

export interface MultipartUpload {
  driveId: string
  jobId: string
  /** Streams the file part into the drive (the upload is discarded if this fails). */
  receive: (file: Readable, truncated: () => boolean) => Promise<void>
  /** The form ended well: the drive leaves `uploading` and the job succeeds. */
  commit: () => Promise<UploadResult>
  /** The form turned out malformed after the file: the drive is removed and the job fails. */
  abort: (err: unknown) => Promise<ClientError>
}

/** Creates the drive (uploading, size 0) and its held job, before the file part is read. */
export async function startMultipartUpload (deps: TransferDeps, ownerId: string, input: Omit<NewDriveInput, 'size'>, sizeHint: number | undefined): Promise<MultipartUpload> {
  const driveId = randomUUID()
  const jobId = newJobId()
  const max = uploadMax(deps)
  await createUploadImage(deps, driveId, 0)
  let row: TakenJob
  try {
    row = await pgTransaction(deps.pool, async (tx) => {
      await createUploadingDrive(tx, ownerId, driveId, jobId, { ...input, size: 0 })
      const job = await deps.engine.enqueueHeld(tx, {
        id: jobId,
        ownerId,
        operation: 'drive_upload',
        params: { driveId, mode: 'multipart' },
        resources: [{ type: 'drives', id: driveId, mode: 'write' }],
        ...(sizeHint ? { bytesTotal: sizeHint } : {}),
        description: 'receiving an image (multipart)'
      })
      await announceDrives(tx, ownerId, [driveId], 'added')
      return job
    })
  } catch (err) {
    await removeImage(deps, driveId)
    throw err
  }
  const held = deps.engine.hold(row, sizeHint ?? null)
  let received: { sha256: string, bytes: number, meter: Meter, t0: number, stored: number } | undefined
  const abort = async (err: unknown): Promise<ClientError> => {
    if (held.leaseGone) {
      // the drive and the job are a newer attempt's now, which removes the drive
      deps.log.warn({ job: jobId, drive: driveId }, 'a multipart upload stopped: its job\'s lease was lost')
      return takenOver(jobId)
    }
    const apiErr = held.cancelled ? errors.validation('The upload was cancelled') : streamFailure(err, 'file')
    await failUpload(deps, held, ownerId, driveId, apiErr)
    return apiErr
  }
  return {
    driveId,
    jobId,
    abort,
    receive: async (file, truncated) => {
      let meter: Meter | undefined
      try {
        const t0 = performance.now()
        held.log(`receiving a multipart file into drive ${driveId} (sha256 computed as it is stored, on a worker thread)`)
        meter = new Meter(max, true, (n) => held.progress(n, sizeHint !== undefined && n > sizeHint ? n : undefined), { move: yieldsSocketReads(file) })
        await pipeline(file, meter, growingWriteStream(deps.storage, driveId, max, sizeHint, meter.written), { signal: held.signal })
        const stored = performance.now()
        if (truncated()) throw errors.tooLarge(`The file is larger than the largest drive (${max} bytes)`, 'file')
        if (meter.bytes === 0) throw errors.validation('The file is empty', 'file')
        received = { sha256: await meter.digest(), bytes: meter.bytes, meter, t0, stored }
        held.log(`stored ${formatBytes(meter.bytes)}, sha256 ${received.sha256}`)
        held.describe(`received ${formatBytes(meter.bytes)} in ${((stored - t0) / 1000).toFixed(1)} s`)
      } catch (err) {
        meter?.release()
        file.resume()
        throw await abort(err)
      }
    },
    commit: async () => {
      if (!received) throw await abort(errors.validation('The form has no file', 'file'))
      const { sha256, bytes } = received
      try {
        await pgTransaction(deps.pool, async (tx) => {
          await finishUploadedDrive(tx, ownerId, driveId, jobId, bytes)
          held.log(uploadTimeSplit(received!.meter, received!.t0, received!.stored, performance.now()))
          await held.finish(tx, { state: 'success', result: { sha256, bytes } })
          // the job's row is written only after finish: finish waits for the log's batch in flight,
          // which updates that row; locked first by this transaction, the two waited on each other
          // until the server's idle-transaction timeout (30 s) ended this one (a 503)
          await query(tx, 'UPDATE jobs SET bytes_total = $2::bigint, bytes_done = $2::bigint WHERE id = $1::uuid', [jobId, bytes], 'clonejobs_upload_bytes_total')
        })
      } catch (err) {
        throw await abort(err)
      }
      return { driveId, jobId, sha256, bytes }
    }
  }
}
