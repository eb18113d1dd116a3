// resumable.js uploads (spec §5.3, decisions.md "Uploads: resumable.js"): GET and POST
// /drives/{uuid}/upload/ with the resumable* parameters. This is the chunked upload of §5.2 under
// another wire format, not a second runtime: the drive comes from /initupload/ (status
// `uploading`, one parked drive_upload job), chunks are rows in upload_chunks written at their
// offset, the first chunk fixes the nominal chunk size, and the last one makes the job due so that
// the drive_upload handler verifies the image and the drive becomes `unmounted` (upload-chunked.ts).
// What differs: chunks count from 1; the request carries the geometry (resumableTotalSize must be
// the drive's size, resumableCurrentChunkSize the chunk's length); a stored chunk answers 200 to a
// GET and to a second POST alike (idempotent) instead of 416; Basic auth instead of link tokens.
import type { Readable } from 'node:stream'
import type { PrismaClient, Tx } from '../../db/client.ts'
import { query } from '../../db/sql.ts'
import { MAX_CHUNKS, chunkCount, chunkRange, tooManyChunks, type ChunkRange } from '../../domain/chunks.ts'
import { isUuid } from '../../http/bodies.ts'
import { DomainError, errors } from '../../http/errors.ts'
import { loadOwnedDrive } from '../drives/service.ts'
import { BodyTooLong } from './streams.ts'
import type { TransferDeps } from './service.ts'
import { setTimeout as sleep } from 'node:timers/promises'
import { type ChunkResult, type ChunksInFlight, type UploadDrive, ChunkBeingReceived, chunkKey, fixChunkSize, chunksStoredSql, fixChunkSizeSql, receiving, storeClaimed, storedChunks } from './upload-chunked.ts'

/** The resumable.js request parameters this service reads (resumable.js sends them all). */
export const RESUMABLE_NUMBERS = ['resumableChunkNumber', 'resumableChunkSize', 'resumableTotalSize', 'resumableCurrentChunkSize', 'resumableTotalChunks'] as const
export const RESUMABLE_STRINGS = ['resumableIdentifier', 'resumableFilename', 'resumableRelativePath', 'resumableType'] as const
const REQUIRED = new Set<string>(['resumableChunkNumber', 'resumableChunkSize', 'resumableTotalSize'])

export interface ResumableChunk {
  /** resumableChunkNumber: from 1. */
  number: number
  /** resumableChunkSize: the nominal chunk size. */
  chunkSize: number
  /** resumableTotalSize: the file's size, which must be the drive's. */
  totalSize: number
  /** resumableCurrentChunkSize, when sent: this chunk's length. */
  currentChunkSize?: number
  /** resumableTotalChunks, when sent. */
  totalChunks?: number
}

/** Reads the resumable* parameters (query string, then form fields fill what it lacks). */
export function resumableChunkOf (...sources: Array<Record<string, unknown>>): ResumableChunk {
  const value = (name: string): number | undefined => {
    const raw = sources.map(s => s[name]).find(v => v !== undefined && v !== '')
    if (raw === undefined) {
      if (REQUIRED.has(name)) throw errors.validation(`${name} is required`, name)
      return undefined
    }
    const text = String(raw).trim()
    const n = /^\d{1,16}$/.test(text) ? Number(text) : NaN
    if (!Number.isSafeInteger(n) || n < 1) throw errors.validation(`${name} must be a positive integer, not ${JSON.stringify(String(raw).slice(0, 40))}`, name)
    return n
  }
  return {
    number: value('resumableChunkNumber')!,
    chunkSize: value('resumableChunkSize')!,
    totalSize: value('resumableTotalSize')!,
    currentChunkSize: value('resumableCurrentChunkSize'),
    totalChunks: value('resumableTotalChunks')
  }
}

interface Located {
  drive: UploadDrive
  jobId: string
  /** The chunk's row number in upload_chunks (from 0). */
  index: number
  range: ChunkRange
  stored: boolean
  /** the upload is over: every chunk was stored and the drive verified (its chunk rows are gone) */
  finished: boolean
}

/**
 * The chunk size of the drive's resumable or chunked upload that succeeded, when that upload is
 * the drive's last: a chunk sent again after the upload completed (its answer lost on the way,
 * resumable.js retrying it) is stored, not a request about an upload that no longer runs.
 */
async function finishedUploadChunkSize (db: Tx | PrismaClient, ownerId: string, driveId: string): Promise<number | undefined> {
  const job = await db.job.findFirst({
    where: { ownerId, operation: 'drive_upload', params: { path: ['driveId'], equals: driveId } },
    orderBy: { created: 'desc' },
    select: { state: true, params: true }
  })
  const p = job?.params as { mode?: unknown, chunkSize?: unknown } | null | undefined
  return job?.state === 'success' && p?.mode === 'chunked' && typeof p.chunkSize === 'number' ? p.chunkSize : undefined
}

/**
 * Checks the chunk against the upload of drive `driveId`: the drive must be `uploading` (made by
 * /initupload/), the total its size, the number within the geometry, the current size the chunk's
 * length, and the chunk size the one fixed by the first chunk (`fix`: a POST fixes it).
 */
async function locate (db: Tx | PrismaClient, ownerId: string, driveId: string, c: ResumableChunk, fix: boolean): Promise<Located> {
  const drive = await loadOwnedDrive(db, ownerId, driveId, { lock: fix })
  const uploading = drive.status === 'uploading' && drive.lockedByJob !== null
  const finishedChunkSize = uploading ? undefined : await finishedUploadChunkSize(db, ownerId, drive.id)
  if (!uploading && finishedChunkSize === undefined) {
    throw errors.wrongState(`Drive ${drive.id} is ${drive.status}: no upload into it is in progress (start one with POST /initupload/)`)
  }
  const range = checkGeometry(drive.id, Number(drive.size), c)
  if (finishedChunkSize !== undefined) {
    if (finishedChunkSize !== c.chunkSize) {
      throw errors.validation(`This upload used chunks of ${finishedChunkSize} bytes (fixed by its first chunk); resumableChunkSize must be ${finishedChunkSize}`, 'resumableChunkSize')
    }
    return { drive, jobId: '', index: c.number - 1, range, stored: true, finished: true }
  }
  const jobId = drive.lockedByJob!
  let fixed: number | undefined
  if (fix) fixed = await fixChunkSize(db as Tx, jobId, c.chunkSize)
  else {
    const job = await db.job.findUnique({ where: { id: jobId }, select: { params: true } })
    const v = (job?.params as { chunkSize?: unknown } | null)?.chunkSize
    fixed = typeof v === 'number' ? v : undefined
  }
  checkFixed(fixed, c)
  const stored = fixed !== undefined &&
    (await db.uploadChunk.findUnique({ where: { driveId_number: { driveId: drive.id, number: c.number - 1 } }, select: { number: true } })) !== null
  return { drive, jobId, index: c.number - 1, range, stored, finished: false }
}

/** The chunk against a drive of `size` bytes: its total, its chunk size, its count, its number, its length, in that order (locate's checks); its range. */
function checkGeometry (driveId: string, size: number, c: ResumableChunk): ChunkRange {
  if (c.totalSize !== size) {
    throw errors.validation(`resumableTotalSize is ${c.totalSize} bytes; drive ${driveId} holds exactly ${size} bytes, the size given to /initupload/`, 'resumableTotalSize')
  }
  const tooMany = tooManyChunks(size, c.chunkSize)
  if (tooMany !== undefined) throw errors.validation(tooMany, 'resumableChunkSize')
  const count = chunkCount(size, c.chunkSize)
  if (c.totalChunks !== undefined && c.totalChunks !== count) {
    throw errors.validation(`resumableTotalChunks is ${c.totalChunks}; ${size} bytes in chunks of ${c.chunkSize} make ${count}`, 'resumableTotalChunks')
  }
  const range = chunkRange(size, c.chunkSize, c.number - 1)
  if (!range) throw errors.validation(`resumableChunkNumber must be between 1 and ${count} for ${size} bytes in chunks of ${c.chunkSize}`, 'resumableChunkNumber')
  if (c.currentChunkSize !== undefined && c.currentChunkSize !== range.length) {
    throw errors.validation(`Chunk ${c.number} holds ${range.length} bytes (the last chunk takes the remainder), not ${c.currentChunkSize}`, 'resumableCurrentChunkSize')
  }
  return range
}

function checkFixed (fixed: number | undefined, c: ResumableChunk): void {
  if (fixed !== undefined && fixed !== c.chunkSize) {
    throw errors.validation(`This upload uses chunks of ${fixed} bytes (fixed by its first chunk); resumableChunkSize must be ${fixed}`, 'resumableChunkSize')
  }
}

// locateToStore's one statement, on the pg pool (named: parsed and planned once per connection), as
// chunkLink's; a POST runs it under the chunk's claim, so it is also the look that CHUNK_NOW_SQL
// makes for a link's chunk (the drive row share-locked: a DELETE that found no chunk claimed holds
// the row until it commits, and the statement then finds the drive gone): $1 drive, $2 owner, $3 total size, $4 chunk size, $5 chunk number (from 0), $6 total
// chunks and $7 this chunk's length (null when not sent), $8 the chunk number as an int (-1 past
// one: no such chunk, and checkGeometry refuses it; an int cast of it would fail the statement as
// it is planned with its values). The drive row is share-locked, so that
// chunks of one upload do not wait for each other (a change of the drive, which takes it FOR
// UPDATE, waits for the statement). The upload's chunk size is fixed only when every check of
// checkGeometry passes (MAX_CHUNKS among them); the products are numeric, so that no client's
// figures overflow a bigint.
const LOCATE_SQL = `
  WITH d AS (
    SELECT size, status, locked_by_job FROM drives WHERE id = $1::uuid AND owner_id = $2::uuid AND NOT deleted FOR SHARE
  ),
  g AS (SELECT d.*, GREATEST(1, floor(d.size::numeric / $4::numeric)) AS count FROM d),
  ok AS (
    SELECT g.locked_by_job AS job_id FROM g
    WHERE g.status = 'uploading' AND g.locked_by_job IS NOT NULL AND g.size = $3::bigint AND g.count <= ${MAX_CHUNKS}
      AND ($6::numeric IS NULL OR $6::numeric = g.count)
      AND $5::numeric >= 0 AND $5::numeric < g.count
      AND ($7::numeric IS NULL OR $7::numeric = CASE WHEN $5::numeric = g.count - 1 THEN g.size - $5::numeric * $4::numeric ELSE $4::numeric END)
  ),
  ${fixChunkSizeSql('$4')}
  SELECT (SELECT size::text FROM d) AS size, (SELECT status FROM d) AS status, (SELECT locked_by_job::text FROM d) AS "jobId",
    (SELECT chunk_size::text FROM fixed) AS fixed,
    EXISTS (SELECT 1 FROM upload_chunks WHERE drive_id = $1::uuid AND number = $8::int) AS stored`

interface LocateRow { size: string | null, status: string | null, jobId: string | null, fixed: string | null, stored: boolean }

/**
 * locate(…, fix: true) for a POST, in one statement on the pg pool while the drive is uploading:
 * through Prisma's interactive transaction, which took the drive row FOR UPDATE, chunks sent
 * three at a time waited for each other there (bench:transfer --chunk-protocol resumable). A
 * drive that is not found or not uploading goes to locate, which says why (or finds the upload
 * finished). Two first chunks at once: the later one's statement waits on the job's row for the
 * earlier one's fix and then cannot see it (its snapshot is older): it runs once more.
 */
async function locateToStore (deps: TransferDeps, ownerId: string, driveId: string, c: ResumableChunk): Promise<Located> {
  const general = () => deps.prisma.$transaction(async (tx) => locate(tx, ownerId, driveId, c, true))
  if (!isUuid(driveId)) return general()
  const id = driveId.toLowerCase()
  const once = async () => (await query<LocateRow>(deps.pool, LOCATE_SQL,
    [id, ownerId, c.totalSize, c.chunkSize, c.number - 1, c.totalChunks ?? null, c.currentChunkSize ?? null, c.number - 1 <= MAX_CHUNKS ? c.number - 1 : -1], 'clonejobs_resumable_locate'))[0]
  const uploading = (r: LocateRow) => r.size !== null && r.status === 'uploading' && r.jobId !== null
  let r = await once()
  if (!uploading(r)) return general()
  const range = checkGeometry(id, Number(r.size), c)
  if (r.fixed === null) r = await once()
  if (!uploading(r) || r.fixed === null) return general()
  const fixed = Number(r.fixed)
  checkFixed(fixed, c)
  return { drive: { id, ownerId, size: Number(r.size) }, jobId: r.jobId!, index: c.number - 1, range, stored: r.stored, finished: false }
}

export interface ResumableResult extends ChunkResult {
  /** The chunk was stored before this request (nothing written). */
  duplicate: boolean
}

async function answer (db: PrismaClient, l: Located, c: ResumableChunk, duplicate: boolean): Promise<ResumableResult> {
  const total = chunkCount(Number(l.drive.size), c.chunkSize)
  const count = l.finished ? total : await storedChunks(db, l.drive.id, l.jobId, Number(l.drive.size), c.chunkSize)
  return { chunk: c.number, bytes: l.range.length, chunksStored: count, chunksTotal: total, complete: count >= total, duplicate }
}

// resumableChunkStatus's one statement, on the pg pool (named), while the drive is uploading: the
// drive, the upload's chunk size, whether the chunk is stored and, when it is, how many are (as
// storedChunks counts them). Nothing is locked: a GET changes nothing, and one statement reads one
// snapshot. $1 drive, $2 owner, $3 the chunk number (from 0) as an int (-1 past MAX_CHUNKS, as
// LOCATE_SQL's $8), $4 the chunk size.
const STATUS_SQL = `
  WITH d AS (SELECT size, status, locked_by_job FROM drives WHERE id = $1::uuid AND owner_id = $2::uuid AND NOT deleted),
  j AS (SELECT (params ->> 'chunkSize')::bigint AS chunk_size, bytes_done FROM jobs WHERE id = (SELECT locked_by_job FROM d)),
  s AS (SELECT EXISTS (SELECT 1 FROM upload_chunks WHERE drive_id = $1::uuid AND number = $3::int) AS stored)
  SELECT d.size::text AS size, d.status, d.locked_by_job::text AS "jobId", (SELECT chunk_size::text FROM j) AS fixed, s.stored,
    CASE WHEN s.stored THEN (${chunksStoredSql('(SELECT bytes_done FROM j)', '$1', 'd.size', '$4')})::int END AS count
  FROM d, s`

interface StatusRow { size: string, status: string, jobId: string | null, fixed: string | null, stored: boolean, count: number | null }

/**
 * GET: the chunk when it is stored; 404 when it is not (resumable.js then POSTs it). resumable.js
 * sends one before each chunk by default (testChunks), so while the drive is uploading this is one
 * statement (STATUS_SQL), where locate took three round trips and the count of a stored chunk a
 * fourth; a drive that is not found or not uploading goes to locate, which says why (or finds the
 * upload finished).
 */
export async function resumableChunkStatus (deps: TransferDeps, ownerId: string, driveId: string, c: ResumableChunk): Promise<ResumableResult> {
  const notStored = (id: string) => new DomainError('notexist', `Chunk ${c.number} of the upload into drive ${id} is not stored yet`, 'resumableChunkNumber')
  if (isUuid(driveId)) {
    const id = driveId.toLowerCase()
    const [r] = await query<StatusRow>(deps.pool, STATUS_SQL, [id, ownerId, c.number - 1 <= MAX_CHUNKS ? c.number - 1 : -1, c.chunkSize], 'clonejobs_resumable_status')
    if (r !== undefined && r.status === 'uploading' && r.jobId !== null) {
      const size = Number(r.size)
      const range = checkGeometry(id, size, c)
      const fixed = r.fixed === null ? undefined : Number(r.fixed)
      checkFixed(fixed, c)
      if (fixed === undefined || !r.stored || r.count === null) throw notStored(id)
      const total = chunkCount(size, c.chunkSize)
      return { chunk: c.number, bytes: range.length, chunksStored: r.count, chunksTotal: total, complete: r.count >= total, duplicate: true }
    }
  }
  const l = await locate(deps.prisma, ownerId, driveId, c, false)
  if (!l.stored) throw notStored(l.drive.id)
  return answer(deps.prisma, l, c, true)
}

/** How often a chunk being received by another process is looked at again, and for how long at most (ms). */
export const OTHER_RECEIVER_POLL_MS = 200
export const OTHER_RECEIVER_WAIT_MS = 30_000

/**
 * POST: writes the chunk at its offset and records it. A chunk stored already (or being stored by
 * another request of this process, which is waited for) is answered as stored and its bytes are
 * discarded, so the same chunk twice is idempotent. A chunk another process is receiving is
 * looked at again every OTHER_RECEIVER_POLL_MS until it is stored (answered as stored) or free
 * (written here); after OTHER_RECEIVER_WAIT_MS, or if this request's body ends meanwhile, 503,
 * which resumable.js retries. `truncated` reports a multipart file part cut by the parser's size limit;
 * `formEnded` resolves when the rest of a multipart form has been read and found acceptable (it
 * rejects on a second file): the chunk is recorded only then, so a refused form leaves the upload
 * as it was.
 */
export async function receiveResumableChunk (deps: TransferDeps, inFlight: ChunksInFlight, ownerId: string, driveId: string, c: ResumableChunk, body: Readable, truncated: () => boolean = () => false, formEnded: () => Promise<void> = async () => {}): Promise<ResumableResult> {
  const t0 = performance.now()
  const startedAt = Date.now()
  const waitUntil = Date.now() + OTHER_RECEIVER_WAIT_MS
  for (;;) {
    const r = await tryResumableChunk(deps, inFlight, ownerId, driveId, c, body, truncated, formEnded, startedAt, t0)
    if (r !== undefined) return r
    if (Date.now() >= waitUntil || body.destroyed || body.readableEnded) {
      body.resume()
      throw errors.busy(`Chunk ${c.number} is being received by another request; retry shortly`, 'resumableChunkNumber')
    }
    await sleep(OTHER_RECEIVER_POLL_MS)
  }
}

/**
 * One attempt of receiveResumableChunk: undefined when another process holds the chunk's claim
 * (nothing read). The chunk is claimed first (receiving), then looked up once under the claim
 * (locateToStore): a lookup before the claim would have to be made again under it (storeChunk),
 * a round trip more for every chunk. A claim asks nothing of the drive: one taken for a drive that
 * is not the caller's, or not uploading, is let go as the lookup refuses it, having written nothing.
 */
async function tryResumableChunk (deps: TransferDeps, inFlight: ChunksInFlight, ownerId: string, driveId: string, c: ResumableChunk, body: Readable, truncated: () => boolean,
  formEnded: () => Promise<void>, startedAt: number, t0: number): Promise<ResumableResult | undefined> {
  const index = c.number - 1
  const key = chunkKey(ownerId, driveId, index)
  // a request of this process for the chunk: waited for, then the chunk is looked at again
  for (let pending = inFlight.get(key); pending !== undefined; pending = inFlight.get(key)) await pending
  let out: { l: Located, r?: ChunkResult }
  try {
    if (index > MAX_CHUNKS) {
      // no chunk has this number, and it cannot be claimed: the lookup says why
      await locateToStore(deps, ownerId, driveId, c)
      throw errors.validation(`resumableChunkNumber must be at most ${MAX_CHUNKS}`, 'resumableChunkNumber')
    }
    out = await receiving(inFlight, ownerId, driveId, index, async (lock) => {
      const l = await locateToStore(deps, ownerId, driveId, c)
      if (l.stored) return { l }
      const { drive, jobId, range } = l
      const r = await storeClaimed(deps, inFlight, lock, body, {
        drive,
        jobId,
        index,
        range,
        chunkSize: c.chunkSize,
        duplicates: 'accept',
        startedAt,
        t0,
        label: `chunk ${c.number}`,
        streamError: (err) => err instanceof BodyTooLong ? tooLong(c, range) : undefined,
        check: async (meter) => {
          if (truncated()) throw tooLong(c, range)
          if (meter.bytes !== range.length) throw errors.validation(`Chunk ${c.number} must hold ${range.length} bytes; ${meter.bytes} arrived`, 'file')
          await formEnded()
        }
      })
      return { l, r }
    })
  } catch (err) {
    // another process holds the chunk: look again
    if (err instanceof ChunkBeingReceived) return undefined
    body.resume()
    throw err
  }
  if (out.r === undefined) {
    // stored before this request (or the upload finished since): its bytes are discarded
    body.resume()
    return answer(deps.prisma, out.l, c, true)
  }
  return { ...out.r, chunk: c.number, duplicate: false }
}

function tooLong (c: ResumableChunk, range: ChunkRange) {
  return errors.validation(`Chunk ${c.number} must hold ${range.length} bytes; more arrived`, 'file')
}
