// Chunked, resumable upload (§5.2): state in upload_chunks rows, a job parked until the last chunk.
import { createHash, randomUUID, type Hash } from 'node:crypto'
import { type Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { Tx } from '../../db/client.ts'
import { chunkCount, chunkRange, type ChunkRange } from '../../domain/chunks.ts'
import { percentOf } from '../../domain/progress.ts'
import { DomainError } from '../../domain/errors.ts'
import { errors } from '../../http/errors.ts'
import { enqueueJob, newJobId } from '../../engine/enqueue.ts'
import { CHANNELS } from '../../engine/listener.ts'
import { publishChange } from '../../engine/events.ts'
import { announceDrives, drivesToWire, loadOwnedDrive, type DriveRow } from '../drives/service.ts'
import type { DriveWire } from '../drives/schemas.ts'
import { chunkLinkPath, findLink, newToken } from './links.ts'
import { Meter } from './streams.ts'
import { CHUNKED_UPLOAD_IDLE_SECONDS, type NewDriveInput, type TransferDeps, checkUploadSize, createUploadingDrive, removeImage, streamFailure } from './service.ts'

// ---------------------------------------------------------------------------------------------
// Chunked, resumable upload (§5.2)

/** POST /initupload/: a drive of exactly `size` bytes in `uploading`, and its parked job. */
export async function initUpload (deps: TransferDeps, ownerId: string, input: NewDriveInput): Promise<DriveWire> {
  checkUploadSize(deps, input.size, 'size')
  const driveId = randomUUID()
  const jobId = newJobId()
  await deps.storage.create(driveId, input.size)
  try {
    const row = await deps.prisma.$transaction(async (tx) => {
      await createUploadingDrive(tx, ownerId, driveId, jobId, input)
      await enqueueJob(tx, {
        id: jobId,
        ownerId,
        operation: 'drive_upload',
        params: { driveId, size: input.size, mode: 'chunked' },
        resources: [{ type: 'drives', id: driveId, mode: 'write' }],
        bytesTotal: input.size,
        description: `waiting for the chunks of a ${input.size} byte image`,
        runAt: idleDeadline()
      })
      // started at once, but with no lease: no worker claims it before its deadline or its last chunk
      await tx.job.update({ where: { id: jobId }, data: { state: 'started', startedAt: new Date() } })
      await announceDrives(tx, ownerId, [driveId], 'added')
      return tx.drive.findUniqueOrThrow({ where: { id: driveId } })
    })
    return (await drivesToWire(deps.prisma, [row]))[0]
  } catch (err) {
    await removeImage(deps, driveId)
    throw err
  }
}

function idleDeadline (): Date {
  return new Date(Date.now() + CHUNKED_UPLOAD_IDLE_SECONDS * 1000)
}

/** The nominal chunk size of an upload, fixed by its first chunk (the geometry depends on it). */
export async function fixChunkSize (tx: Tx, jobId: string, chunkSize: number): Promise<number> {
  await tx.$executeRaw`
    UPDATE jobs SET params = params || jsonb_build_object('chunkSize', ${chunkSize}::bigint)
    WHERE id = ${jobId}::uuid AND NOT (params ? 'chunkSize')`
  const job = await tx.job.findUniqueOrThrow({ where: { id: jobId }, select: { params: true } })
  return Number((job.params as { chunkSize?: unknown }).chunkSize)
}

/** ?do=upload_chunk: a 5-minute link for one chunk, or 416 when the chunk is stored already. */
export async function chunkLink (deps: TransferDeps, ownerId: string, driveId: string, chunkNumber: number, chunkSize: number): Promise<{ link: string }> {
  return deps.prisma.$transaction(async (tx) => {
    const drive = await loadOwnedDrive(tx, ownerId, driveId, { lock: true })
    if (drive.status !== 'uploading' || !drive.lockedByJob) throw errors.wrongState(`Drive ${drive.id} is ${drive.status}, not uploading`)
    const jobId = drive.lockedByJob
    const size = Number(drive.size)
    const fixed = await fixChunkSize(tx, jobId, chunkSize)
    if (fixed !== chunkSize) throw errors.validation(`This upload uses chunks of ${fixed} bytes; chunk_size must be ${fixed}`, 'chunk_size')
    if (!chunkRange(size, chunkSize, chunkNumber)) {
      throw errors.validation(`chunk_number must be between 0 and ${chunkCount(size, chunkSize) - 1} for ${size} bytes in chunks of ${chunkSize}`, 'chunk_number')
    }
    const stored = await tx.uploadChunk.findUnique({ where: { driveId_number: { driveId: drive.id, number: chunkNumber } } })
    if (stored) throw chunkStored(chunkNumber)
    const { token, hash } = newToken()
    await tx.transferLink.create({
      data: {
        tokenHash: hash,
        ownerId,
        driveId: drive.id,
        jobId,
        purpose: 'upload_chunk',
        chunkNumber,
        chunkSize: BigInt(chunkSize),
        expiresAt: new Date(Date.now() + deps.config.uploadLinkTtlSeconds * 1000)
      }
    })
    return { link: chunkLinkPath(token) }
  })
}

function chunkStored (n: number): DomainError {
  return errors.rangeNotSatisfiable(`Chunk ${n} already uploaded`, 'chunk_number')
}

/**
 * Chunks being received by this process (key `drive:number`, both protocols), each with a promise
 * that settles when its request is over. A §5.2 duplicate is refused (416) before it writes; a
 * resumable.js duplicate waits for the first and then answers by what it stored. One per app
 * (made by the uploads plugin), never module-level: two apps in one process share nothing; another
 * app or process sharing the database is stopped by the upload_chunks row instead.
 */
export class ChunksInFlight extends Map<string, Promise<void>> {
  /** the running sha256 of each upload whose chunks this app received in order (see InOrderHash) */
  readonly hashes = new Map<string, { next: number, hash: Hash }>()
}

/** Uploads whose running hash is kept at most (the oldest is dropped: its job reads the image). */
const RUNNING_HASHES_MAX = 256

/**
 * The sha256 of an upload computed as its chunks arrive: while this app receives chunk 0, 1, 2...
 * in order, each is hashed on its way to the disk, and the request that records the last one
 * knows the image's digest, so the job need not read the whole image again to hash it. Any gap
 * (a chunk out of order, one received by another process, a failed chunk) drops back to that read.
 */
export class InOrderHash {
  /** the hash to feed this chunk's bytes into, or undefined when it is not the next in order */
  readonly hash: Hash | undefined

  constructor (private readonly inFlight: ChunksInFlight, private readonly driveId: string, private readonly n: number, private readonly total: number) {
    const running = inFlight.hashes.get(driveId) ?? (n === 0 ? { next: 0, hash: createHash('sha256') } : undefined)
    // a copy: the running state moves on only once this chunk is stored and recorded
    this.hash = running !== undefined && running.next === n ? running.hash.copy() : undefined
  }

  /** The image's sha256 when this chunk completes an in-order run of all of them. */
  digestIfLast (): string | undefined {
    return this.hash !== undefined && this.n + 1 === this.total ? this.hash.copy().digest('hex') : undefined
  }

  /** This chunk was recorded: the running hash moves past it. */
  recorded (): void {
    if (this.hash === undefined) return
    this.inFlight.hashes.delete(this.driveId)
    if (this.n + 1 >= this.total) return
    this.inFlight.hashes.set(this.driveId, { next: this.n + 1, hash: this.hash })
    if (this.inFlight.hashes.size > RUNNING_HASHES_MAX) this.inFlight.hashes.delete(this.inFlight.hashes.keys().next().value!)
  }
}

export interface ChunkResult {
  chunk: number
  bytes: number
  chunksStored: number
  chunksTotal: number
  complete: boolean
}

/** POST <link>: writes the chunk at its offset, records it, and finishes the upload after the last one. */
export async function receiveChunk (deps: TransferDeps, inFlight: ChunksInFlight, token: string, body: Readable, contentLength: number | undefined): Promise<ChunkResult> {
  const link = await findLink(deps.prisma, token, 'upload_chunk')
  const n = link.chunkNumber ?? -1
  const S = Number(link.chunkSize ?? 0)
  const drive = await deps.prisma.drive.findFirst({ where: { id: link.driveId, ownerId: link.ownerId, deleted: false } })
  if (!drive || drive.status !== 'uploading' || drive.lockedByJob !== link.jobId || !link.jobId) {
    throw errors.gone('The upload this link belongs to is over')
  }
  const jobId = link.jobId
  const size = Number(drive.size)
  const range = chunkRange(size, S, n) as ChunkRange
  if (contentLength !== undefined && contentLength !== range.length) {
    throw errors.validation(`Chunk ${n} holds ${range.length} bytes; the body announces ${contentLength}`, 'Content-Length')
  }
  const key = `${drive.id}:${n}`
  if (inFlight.has(key)) throw errors.rangeNotSatisfiable(`Chunk ${n} already uploaded (it is being received now)`, 'chunk_number')
  if (await deps.prisma.uploadChunk.findUnique({ where: { driveId_number: { driveId: drive.id, number: n } } })) throw chunkStored(n)
  // looked at again: another request for this chunk may have started while the row was read
  if (inFlight.has(key)) throw errors.rangeNotSatisfiable(`Chunk ${n} already uploaded (it is being received now)`, 'chunk_number')
  return receiving(inFlight, key, async () => {
    const inOrder = new InOrderHash(inFlight, drive.id, n, chunkCount(size, S))
    const meter = new Meter(range.length, inOrder.hash ?? false)
    try {
      await pipeline(body, meter, await deps.storage.createWriteStream(drive.id, { start: range.start }))
    } catch (err) {
      body.resume()
      throw streamFailure(err, `chunk ${n}`)
    }
    if (meter.bytes !== range.length) {
      throw errors.validation(`Chunk ${n} must hold ${range.length} bytes; ${meter.bytes} arrived`, 'Content-Length')
    }
    const r = await recordChunk(deps, drive, jobId, n, range.length, S, 'refuse', inOrder.digestIfLast())
    inOrder.recorded()
    return r
  })
}

/** Runs `receive` with chunk `key` marked in flight in this app, until it settles (both protocols). */
export async function receiving<T> (inFlight: ChunksInFlight, key: string, receive: () => Promise<T>): Promise<T> {
  let settle!: () => void
  inFlight.set(key, new Promise(resolve => { settle = resolve }))
  try {
    return await receive()
  } finally {
    inFlight.delete(key)
    settle()
  }
}

/** How many chunks of `driveId`'s upload are stored, and their bytes. */
export async function storedChunks (db: Tx | TransferDeps['prisma'], driveId: string): Promise<{ count: number, bytes: number }> {
  const [agg] = await db.$queryRaw<Array<{ count: number, bytes: string }>>`
    SELECT count(*)::int AS count, COALESCE(sum(size), 0)::text AS bytes FROM upload_chunks WHERE drive_id = ${driveId}::uuid`
  return { count: agg.count, bytes: Number(agg.bytes) }
}

/**
 * Records chunk `n` (from 0) as stored and moves the job's progress; the last chunk makes the job
 * due, so a worker verifies the image and finishes the upload (exactly once: the job row lock
 * orders concurrent last chunks). A chunk stored already is 416 (`refuse`, §5.2) or answered as
 * stored (`accept`, resumable.js, where the same chunk twice is idempotent).
 */
export async function recordChunk (deps: TransferDeps, drive: DriveRow, jobId: string, n: number, length: number, S: number, duplicates: 'refuse' | 'accept', sha256?: string): Promise<ChunkResult> {
  const size = Number(drive.size)
  const total = chunkCount(size, S)
  // §5.2 clients hold a link, which is gone (410) with the upload; resumable.js retries anything
  // but 400/404/415/500/501 at once, so it is told 400 (the drive's state)
  const over = () => duplicates === 'refuse' ? errors.gone('The upload this link belongs to is over') : errors.wrongState(`The upload into drive ${drive.id} is over`)
  return deps.prisma.$transaction(async (tx) => {
    // chunks of one upload are recorded one at a time: without this row lock, two last chunks
    // arriving together could each miss the other's row, so neither would see the upload complete
    await tx.$executeRaw`SELECT 1 FROM jobs WHERE id = ${jobId}::uuid FOR UPDATE`
    const inserted = await tx.$executeRaw`
      INSERT INTO upload_chunks (drive_id, number, size) VALUES (${drive.id}::uuid, ${n}, ${BigInt(length)}) ON CONFLICT DO NOTHING`
    const agg = await storedChunks(tx, drive.id)
    if (inserted === 0) {
      if (duplicates === 'refuse') throw chunkStored(n)
      return { chunk: n, bytes: length, chunksStored: agg.count, chunksTotal: total, complete: agg.count >= total }
    }
    const bytes = agg.bytes
    const complete = agg.count >= total
    const job = await tx.job.updateMany({
      where: { id: jobId, state: 'started', lockedBy: null },
      data: {
        bytesDone: BigInt(bytes),
        progress: percentOf(bytes, size) ?? 0,
        description: complete ? 'all chunks received; verifying the image' : `received ${agg.count} of ${total} chunks`,
        // the last chunk makes the job due now: a worker finishes the upload
        runAt: complete ? new Date() : idleDeadline(),
        lastModified: new Date()
      }
    })
    if (job.count === 0) throw over()
    // every chunk was hashed in order as it arrived (InOrderHash): the job takes this digest
    if (complete && sha256 !== undefined) {
      await tx.$executeRaw`UPDATE jobs SET params = params || jsonb_build_object('sha256', ${sha256}::text) WHERE id = ${jobId}::uuid`
    }
    if (complete) await tx.$executeRaw`SELECT pg_notify(${CHANNELS.jobs}, ${jobId})`
    await publishChange(tx, { ownerId: drive.ownerId, resourceType: 'jobs', resourceId: jobId })
    return { chunk: n, bytes: length, chunksStored: agg.count, chunksTotal: total, complete }
  })
}
