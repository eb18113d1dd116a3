// Uploads and downloads of drive images (spec §5, decisions.md "Uploads and downloads"): the
// shared parts (deps, the steps every upload takes, how failures are recorded). Each protocol has
// its own module: upload-raw.ts, upload-multipart.ts, upload-into.ts, upload-chunked.ts,
// upload-resumable.ts (resumable.js, over the chunked upload's state), download-jobs.ts; links.ts
// holds the tokens, streams.ts the stream utilities; uploads.ts and downloads.ts are the routes.
//
// Every transfer is a job. Bytes arrive or leave in an HTTP request, so the request itself holds
// the job's lease through the engine ("request-held" jobs, src/engine/held.ts): the engine
// heartbeats it, the request reports byte progress and records the outcome. If the process dies, the
// lease expires and the engine takes the job over; the drive_upload / drive_download handlers
// then undo what is left (see handlers/drive-upload.ts).
//
// A chunked upload is different: it lasts as long as the client wants, across requests and
// restarts, so its state lives in upload_chunks rows. Its job is `started` with no lease and a
// `run_at` deadline that every chunk pushes forward. When the last chunk is stored and every chunk
// went through this process (hashed as it arrived, or read back: InOrderHash), that chunk's request finishes the upload itself (it leases
// the job for it, in the transaction that records the chunk); otherwise the job is made due at
// once and the engine runs the handler, which hashes the image and finishes the upload. If the
// deadline passes first the handler discards the drive.
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type pg from 'pg'
import type { PrismaClient } from '../../db/client.ts'
import type { Config } from '../../config.ts'
import { DEFAULT_STORAGE_TYPE } from '../../domain/drive-status.ts'
import { DomainError, domainErrors } from '../../domain/errors.ts'
import { toApiError } from '../../http/error-handler.ts'
import { ApiError, errors } from '../../http/errors.ts'
import { databaseFailure } from '../../http/database-errors.ts'
import type { JobEngine } from '../../engine/engine.ts'
import type { HeldJob, JobFailureRecord } from '../../engine/held.ts'
import { announceDrives, maxDriveSize, restingStatusSql } from '../drives/service.ts'
import { recordImageIntent, removeRecordedImages } from '../drives/image-removals.ts'
import { toRow, type Row } from '../drives/read-sql.ts'
import { query, type InTx } from '../../db/sql.ts'
import type { Drive as DriveRow } from '../../db/generated/client.ts'
import type { DriveStorage } from '../../storage/index.ts'
import { BodyTooLong } from './streams.ts'

/** A chunked upload with no new chunk for this long is abandoned and its drive removed. */
export const CHUNKED_UPLOAD_IDLE_SECONDS = 24 * 3600

export interface TransferDeps {
  prisma: PrismaClient
  /** The pg pool under `prisma`, for the uploads' hot statements (src/db/pg-transaction.ts). */
  pool: pg.Pool
  storage: DriveStorage
  log: FastifyBaseLogger
  config: Pick<Config, 'driveMaxSize' | 'uploadLinkTtlSeconds' | 'downloadLinkTtlSeconds' | 'jobLeaseSeconds' | 'chunkReadBackMaxBytes'>
  /** The engine, which enqueues, leases and heartbeats request-held jobs. */
  engine: Pick<JobEngine, 'enqueueHeld' | 'take' | 'hold'>
}

export function transferDeps (app: FastifyInstance): TransferDeps {
  return {
    prisma: app.prisma,
    pool: app.dbPool,
    storage: app.storage,
    log: app.log,
    config: app.config,
    engine: app.jobs
  }
}

export function uploadMax (deps: TransferDeps): number {
  return maxDriveSize(deps.config.driveMaxSize)
}

// ---------------------------------------------------------------------------------------------
// Request-held jobs go through the engine: app.jobs.enqueueHeld / take / hold (src/engine/held.ts)

export type { HeldJob }

/** A failure as recorded on a transfer's job: the client's errors by type, anything else as backend. */
export function failureRecord (err: unknown): JobFailureRecord {
  if (err instanceof ApiError || err instanceof DomainError) return { error_type: toApiError(err).errorType, error_message: err.message }
  return { error_type: 'backend', error_message: 'the transfer failed' }
}

// ---------------------------------------------------------------------------------------------
// Uploads: shared steps

export interface NewDriveInput {
  name: string
  media: string
  size: number
  storageType?: string
  meta?: Record<string, string>
  affinities?: string[]
}

/** A new drive in `uploading`, held by its upload's job `jobId`: one statement, on a pg client (a transaction's). */
export async function createUploadingDrive (client: pg.PoolClient, ownerId: string, id: string, jobId: string, input: NewDriveInput): Promise<DriveRow> {
  const [row] = await query<Row>(client, UPLOADING_DRIVE_SQL, [
    id, ownerId, input.name, input.size, input.media, input.storageType ?? DEFAULT_STORAGE_TYPE,
    JSON.stringify(input.affinities ?? []), JSON.stringify(input.meta ?? {}), jobId
  ], 'clonejobs_uploading_drive')
  return toRow(row)
}
const UPLOADING_DRIVE_SQL = `
  INSERT INTO drives (id, owner_id, name, size, media, status, storage_type, affinities, meta, locked_by_job, created_at, updated_at)
  VALUES ($1::uuid, $2::uuid, $3, $4::bigint, $5, 'uploading', $6, ARRAY(SELECT jsonb_array_elements_text($7::jsonb)), $8::jsonb, $9::uuid, now(), now())
  RETURNING *`

export function checkUploadSize (deps: TransferDeps, size: number, point: string): void {
  const max = uploadMax(deps)
  // refused before the body is read: the connection is closed after the answer, not drained
  if (size > max) throw new ApiError(413, 'validation', `The image is ${size} bytes; drives hold at most ${max} bytes`, point, { connection: 'close' })
  if (!Number.isSafeInteger(size) || size < 1) throw errors.validation('The image must hold at least 1 byte', point)
}

/**
 * Makes the image of an upload's new drive, whose row the caller inserts next. The image is
 * recorded for removal first; the row's commit takes that record (image-removals.ts), so an image
 * whose row never commits (the transaction failed: removeImage; the process died) is removed.
 */
export async function createUploadImage (deps: TransferDeps, driveId: string, size: number): Promise<void> {
  await recordImageIntent(deps.pool, driveId, 'an upload\'s image made before its drive row')
  try {
    await deps.storage.create(driveId, size)
  } catch (err) {
    await removeImage(deps, driveId)
    throw err
  }
}

/**
 * Removes the image of an upload whose rows were never committed, with its record (createUploadImage);
 * a failed delete is logged, not thrown, and its record left to the sweeper.
 */
export async function removeImage (deps: TransferDeps, driveId: string): Promise<void> {
  await removeRecordedImages(deps, [driveId]).catch(err => deps.log.error({ err, drive: driveId }, 'could not remove the image of a failed upload'))
}

/**
 * The answer of an upload request whose job's lease was lost (its heartbeats failed, or another
 * process took the job over): the job and what it made are a newer attempt's now, which undoes or
 * finishes the upload, so the request touches nothing more.
 */
export function takenOver (jobId: string): DomainError {
  return domainErrors.busy(`The upload's job ${jobId} was taken over by another process; see the job for its outcome`)
}

/** Removes an upload's drive (row and data) if the job still holds it: nothing half-made remains. */
export async function discardUpload (prisma: PrismaClient, storage: DriveStorage, ownerId: string, driveId: string, jobId: string, alsoInTx?: (tx: InTx) => Promise<void>): Promise<void> {
  const row = await prisma.drive.findUnique({ where: { id: driveId }, select: { lockedByJob: true } })
  if (row && row.lockedByJob !== jobId) {
    if (alsoInTx) await prisma.$transaction(alsoInTx)
    return
  }
  await storage.delete(driveId)
  await prisma.$transaction(async (tx) => {
    await tx.transferLink.deleteMany({ where: { driveId } })
    await tx.drive.deleteMany({ where: { id: driveId, lockedByJob: jobId } })
    await announceDrives(tx, ownerId, [driveId])
    await alsoInTx?.(tx)
  })
}

/**
 * A raw or multipart upload into a new drive failed in its request: the image and the drive go,
 * and the job records `error` in the same transaction as the drive's removal. When that cannot be
 * done (the pool exhausted, the database or the storage failing), nothing is recorded and the job
 * is abandoned: its lease runs out and the worker that takes it over removes the drive
 * (drive_upload's cleanup). Either way no drive is left uploading under a finished job.
 */
export async function failUpload (deps: TransferDeps, held: HeldJob, ownerId: string, driveId: string, error: ClientError): Promise<void> {
  try {
    await discardUpload(deps.prisma, deps.storage, ownerId, driveId, held.id, async (tx) => held.failIn(tx, failureRecord(error)))
  } catch (err) {
    deps.log.error({ err, job: held.id, drive: driveId }, 'could not discard a failed upload; a worker removes it once its job\'s lease runs out')
    held.abandon()
  }
}

/** The upload is complete: the drive leaves `uploading` (with its final size when given). */
export async function finishUploadedDrive (db: InTx, ownerId: string, driveId: string, jobId: string, size?: number): Promise<void> {
  const [done] = await query<{ n: number }>(db, FINISH_DRIVE_SQL, [driveId, jobId, size ?? null], 'clonejobs_upload_finish_drive')
  if (done.n === 0) throw errors.gone('The drive of this upload is gone')
  await announceDrives(db, ownerId, [driveId])
}
// one statement: the drive's resting status, its lock and size, and the upload's chunk rows and
// chunk links, which only an upload in progress needs
const FINISH_DRIVE_SQL = `
  WITH d AS (
    UPDATE drives SET status = ${restingStatusSql('$1')},
      locked_by_job = NULL, size = COALESCE($3::bigint, size), updated_at = now()
    WHERE id = $1::uuid AND locked_by_job = $2::uuid AND status = 'uploading' AND NOT deleted
    RETURNING id
  ),
  c AS (DELETE FROM upload_chunks WHERE drive_id = $1::uuid AND EXISTS (SELECT 1 FROM d)),
  l AS (DELETE FROM transfer_links WHERE drive_id = $1::uuid AND purpose = 'upload_chunk' AND EXISTS (SELECT 1 FROM d))
  SELECT count(*)::int AS n FROM d`

export type ClientError = ApiError | DomainError

export function streamFailure (err: unknown, what: string): ClientError {
  if (err instanceof ApiError || err instanceof DomainError) return err
  if (err instanceof BodyTooLong) return errors.tooLarge(`The ${what} is larger than allowed: ${err.message}`)
  // the pool or the database failed, not the client's bytes: 503, retry
  const unavailable = databaseFailure(err)
  if (unavailable) return unavailable
  return errors.validation(`The ${what} was not received completely (the connection ended early)`)
}

export interface UploadResult {
  driveId: string
  jobId: string
  sha256: string
  bytes: number
}
