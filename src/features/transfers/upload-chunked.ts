// Chunked, resumable upload (§5.2): state in upload_chunks rows, a job parked until the last chunk.
import { randomUUID } from 'node:crypto'
import { type Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import pg from 'pg'
import type { Tx } from '../../db/client.ts'
import { pgTransaction } from '../../db/pg-transaction.ts'
import { MAX_CHUNKS, chunkClaimGroup, chunkCount, chunkRange, tooManyChunks, type ChunkRange } from '../../domain/chunks.ts'
import { formatBytes } from '../../domain/progress.ts'
import { DomainError } from '../../domain/errors.ts'
import { ApiError, errors } from '../../http/errors.ts'
import { isUuid } from '../../http/bodies.ts'
import { databaseFailure } from '../../http/database-errors.ts'
import { enqueueJobs, newJobId } from '../../engine/enqueue.ts'
import { query } from '../../db/sql.ts'
import { CHANNELS } from '../../engine/listener.ts'
import { heldSql, memberName, type SessionLock, type SessionLocks } from '../../db/session-locks.ts'
import { publishChange, publishEventsSql } from '../../engine/events.ts'
import { announceDrives, driveToWire } from '../drives/service.ts'
import type { DriveWire } from '../drives/schemas.ts'
import type { DriveReader, DriveStorage } from '../../storage/index.ts'
import { OffThreadSha256 } from './hashing.ts'
import { downloadBuffers } from './pump.ts'
import { checkLink, chunkLinkPath, hashToken, isToken, newToken } from './links.ts'
import { Meter, yieldsSocketReads } from './streams.ts'
import { CHUNKED_UPLOAD_IDLE_SECONDS, type NewDriveInput, type TransferDeps, checkUploadSize, createUploadingDrive, finishUploadedDrive, createUploadImage, removeImage, streamFailure } from './service.ts'

// ---------------------------------------------------------------------------------------------
// Chunked, resumable upload (§5.2)

/** POST /initupload/: a drive of exactly `size` bytes in `uploading`, and its parked job. */
export async function initUpload (deps: TransferDeps, ownerId: string, input: NewDriveInput): Promise<DriveWire> {
  checkUploadSize(deps, input.size, 'size')
  const driveId = randomUUID()
  const jobId = newJobId()
  await createUploadImage(deps, driveId, input.size)
  try {
    // on a connection of the pg pool (BEGIN, four statements, COMMIT): in-process an initupload
    // took 7.0-7.7 ms this way against 20.0 ms through Prisma's interactive transaction
    const row = await pgTransaction(deps.pool, async (client) => {
      const drive = await createUploadingDrive(client, ownerId, driveId, jobId, input)
      await enqueueJobs(client, [{
        id: jobId,
        ownerId,
        operation: 'drive_upload',
        params: { driveId, size: input.size, mode: 'chunked' },
        resources: [{ type: 'drives', id: driveId, mode: 'write' }],
        bytesTotal: input.size,
        description: `waiting for the chunks of a ${input.size} byte image`,
        runAt: idleDeadline()
      }])
      // started at once, but with no lease: no worker claims it before its deadline or its last chunk
      await query(client, INIT_START_SQL, [jobId], 'clonejobs_init_start')
      await announceDrives(client, ownerId, [driveId], 'added')
      return drive
    })
    // a new drive's only job is its upload, and no server mounts it yet
    return driveToWire(row, { jobIds: [jobId], serverIds: [] })
  } catch (err) {
    await removeImage(deps, driveId)
    throw err
  }
}

const INIT_START_SQL = "UPDATE jobs SET state = 'started', started_at = now() WHERE id = $1::uuid"

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

/**
 * The WITH items `fix` and `fixed` of a statement that has `d` (the drive row: locked_by_job) and
 * `ok` (job_id, when every check passed): the upload's chunk size set to `param` if none is yet,
 * and the upload's chunk size as it now stands (chunkLink's and a resumable.js chunk's lookups).
 */
export const fixChunkSizeSql = (param: string) => `
  fix AS (
    UPDATE jobs SET params = params || jsonb_build_object('chunkSize', ${param}::bigint)
    WHERE id = (SELECT job_id FROM ok) AND NOT (params ? 'chunkSize')
    RETURNING (params ->> 'chunkSize')::bigint AS chunk_size
  ),
  fixed AS (
    SELECT COALESCE((SELECT chunk_size FROM fix), (SELECT (params ->> 'chunkSize')::bigint FROM jobs WHERE id = (SELECT locked_by_job FROM d))) AS chunk_size
  )`

// chunkLink's one statement, on the pg pool (named: parsed and planned once per connection). $1
// chunk number, $2 drive, $3 chunk size, $4 token hash, $5 owner, $6 link TTL (s), $7 the chunk
// number as an int (a number past one is past MAX_CHUNKS, which no upload exceeds: an int cast of
// it, even unused, would fail the statement as it is planned with its values). The drive row
// is share-locked (a change of the upload's drive, which takes it FOR UPDATE, waits for the link,
// and the link for the change: then it reads the changed row), so links of one upload do not wait
// for each other. What it read says which check failed.
const LINK_SQL = `
  WITH d AS (
    SELECT size, status, locked_by_job FROM drives WHERE id = $2::uuid AND owner_id = $5::uuid AND NOT deleted FOR SHARE
  ),
  ok AS (
    -- an upload, and the chunk exists with this chunk size
    SELECT d.locked_by_job AS job_id FROM d
    WHERE d.status = 'uploading' AND d.locked_by_job IS NOT NULL
      AND $1::bigint >= 0 AND $1::bigint < GREATEST(1, floor(d.size::numeric / $3::numeric))
      AND floor(d.size::numeric / $3::numeric) <= ${MAX_CHUNKS}
  ),
  ${fixChunkSizeSql('$3')},
  stored AS (
    SELECT EXISTS (SELECT 1 FROM upload_chunks WHERE drive_id = $2::uuid AND number = $1::bigint) AS stored
  ),
  link AS (
    INSERT INTO transfer_links (token_hash, owner_id, drive_id, job_id, purpose, chunk_number, chunk_size, expires_at)
    SELECT $4::text, $5::uuid, $2::uuid, ok.job_id, 'upload_chunk', $7::int, $3::bigint, now() + make_interval(secs => $6::int)
    FROM ok, fixed, stored
    WHERE fixed.chunk_size = $3::bigint AND NOT stored.stored
    RETURNING 1
  )
  SELECT (SELECT size::text FROM d) AS size, (SELECT status FROM d) AS status, (SELECT locked_by_job IS NOT NULL FROM d) AS held,
    (SELECT chunk_size::text FROM fixed) AS fixed, (SELECT stored FROM stored) AS stored, EXISTS (SELECT 1 FROM link) AS created`

interface LinkRow { size: string | null, status: string | null, held: boolean | null, fixed: string | null, stored: boolean, created: boolean }

/**
 * ?do=upload_chunk: a 5-minute link for one chunk, or 416 when the chunk is stored already. A link
 * is asked for before every chunk, so this is one statement (LINK_SQL): it fixes the upload's
 * chunk size if this is its first valid link and writes the link only when every check passes.
 * Two first links at once: the later one's statement waits on the job's row for the earlier one's
 * fix and then cannot see it (its snapshot is older), so it reads no chunk size and writes no
 * link; it runs once more, with a snapshot that holds the fix.
 */
export async function chunkLink (deps: TransferDeps, ownerId: string, driveId: string, chunkNumber: number, chunkSize: number): Promise<{ link: string }> {
  if (!isUuid(driveId)) throw errors.notFound('Drive', 'uuid')
  const id = driveId.toLowerCase()
  const { token, hash } = newToken()
  // $7: the number as an int, -1 past one (then it is past every upload's chunks, and no link is written)
  const once = async () => (await query<LinkRow>(deps.pool, LINK_SQL, [chunkNumber, id, chunkSize, hash, ownerId, deps.config.uploadLinkTtlSeconds, chunkNumber <= MAX_CHUNKS ? chunkNumber : -1], 'clonejobs_link'))[0]
  let r = await once()
  const raced = (row: LinkRow) => row.held === true && row.status === 'uploading' && row.fixed === null && !row.stored && chunkRange(Number(row.size), chunkSize, chunkNumber) !== undefined &&
    tooManyChunks(Number(row.size), chunkSize) === undefined
  if (raced(r)) r = await once()
  if (r.size === null) throw errors.notFound(`Drive ${driveId}`, 'uuid')
  if (r.status !== 'uploading' || r.held !== true) throw errors.wrongState(`Drive ${id} is ${r.status}, not uploading`)
  const size = Number(r.size)
  const fixed = r.fixed === null ? undefined : Number(r.fixed)
  if (fixed !== undefined && fixed !== chunkSize) throw errors.validation(`This upload uses chunks of ${fixed} bytes; chunk_size must be ${fixed}`, 'chunk_size')
  const tooMany = tooManyChunks(size, chunkSize)
  if (tooMany !== undefined) throw errors.validation(tooMany, 'chunk_size')
  if (!chunkRange(size, chunkSize, chunkNumber)) {
    throw errors.validation(`chunk_number must be between 0 and ${chunkCount(size, chunkSize) - 1} for ${size} bytes in chunks of ${chunkSize}`, 'chunk_number')
  }
  if (r.stored) throw chunkStored(chunkNumber)
  if (!r.created) throw new Error(`the link for chunk ${chunkNumber} of drive ${id} was not written`)
  return { link: chunkLinkPath(token) }
}

function chunkStored (n: number): DomainError {
  return errors.rangeNotSatisfiable(`Chunk ${n} already uploaded`, 'chunk_number')
}

/**
 * The key of chunk `n` of `ownerId`'s drive `driveId` in ChunksInFlight. It names the owner as
 * the chunk's claim does (chunkClaimGroup): a resumable.js POST marks its chunk in flight before
 * its lookup proves the drive is the caller's, and another account's request then keeps none of
 * the owner's chunks waiting or refused (a §5.2 duplicate is 416, which clients skip).
 */
export function chunkKey (ownerId: string, driveId: string, n: number): string {
  return `${ownerId.toLowerCase()}:${driveId.toLowerCase()}:${n}`
}

/**
 * Chunks being received by this process (key chunkKey's `owner:drive:number`, both protocols), each with a promise
 * that settles when its request is over. A §5.2 duplicate is refused (416) before it writes; a
 * resumable.js duplicate waits for the first and then answers by what it stored. One per app
 * (made by the uploads plugin), never module-level: two apps in one process share nothing. Across
 * apps and processes sharing the database, a chunk is claimed for as long as a request writes it
 * (`claims`: a session-level advisory lock per chunk on this app's one claims connection), so a
 * duplicate sent to another process is refused (or waited for) the same way; and once it holds the
 * claim a request looks again at the chunk's row and the upload before it writes.
 */
export class ChunksInFlight extends Map<string, Promise<void>> {
  /** the running sha256 of each upload whose chunks this app received (see InOrderHash) */
  readonly hashes = new Map<string, RunningHash>()

  constructor (readonly claims: SessionLocks) {
    super()
  }

  /** Forgets every running hash (after any read-back under way stops) and drops the claims connection (the app closes). */
  async close (): Promise<void> {
    const reading = [...this.hashes.values()].map(r => r.readingBack)
    for (const [driveId, r] of this.hashes) forget(this, driveId, r)
    await Promise.allSettled(reading)
    await this.claims.close()
  }
}

/**
 * The chunk is being received by another request (of another app or process: this app's own are
 * found in ChunksInFlight first). Nothing of the body was read.
 */
export class ChunkBeingReceived extends Error {
  constructor (readonly n: number) {
    super(`Chunk ${n} is being received by another request`)
    this.name = 'ChunkBeingReceived'
  }
}

function beingReceived (n: number): DomainError {
  return errors.rangeNotSatisfiable(`Chunk ${n} already uploaded (it is being received now)`, 'chunk_number')
}

/** The claims connection failed while the chunk was written: it is no longer known to be this request's. */
function claimLost (n: number): ApiError {
  return new ApiError(503, 'database', `Chunk ${n} was not stored: the database connection that claimed it failed; retry shortly`, null, { 'retry-after': '1' })
}

/** Uploads whose running hash is kept at most (the oldest is dropped: its job reads the image). */
const RUNNING_HASHES_MAX = 256

/**
 * An upload's running sha256 in this app: chunks [0, next) are in `hash` (none while next is 0);
 * `ahead` holds the chunks recorded here past next, which wait to be read back into it.
 */
export interface RunningHash {
  next: number
  hash: OffThreadSha256 | undefined
  ahead: Map<number, ChunkRange>
  /** chunks stored here whose records are under way */
  pending: Map<number, ChunkRange>
  /** chunks that went into `hash` read back from the image, not on their way in */
  readBack: number
  /** the read-back of `ahead` under way (see readBack) */
  readingBack: Promise<void> | undefined
  dropped: boolean
}

function forget (inFlight: ChunksInFlight, driveId: string, r: RunningHash): void {
  r.dropped = true
  r.hash?.drop()
  if (inFlight.hashes.get(driveId) === r) inFlight.hashes.delete(driveId)
}

/** Feeds bytes `range` of the image into `hash`, read through `reader` into `buf`. */
async function feedRange (reader: DriveReader, hash: OffThreadSha256, range: ChunkRange, buf: Buffer): Promise<void> {
  for (let pos = range.start, end = range.start + range.length; pos < end;) {
    const n = await reader.read(buf, Math.min(buf.length, end - pos), pos)
    if (n === 0) throw new Error(`the image ended at ${pos} bytes, inside a chunk that was recorded`)
    // update() copies the bytes before it returns: buf is free again
    await hash.update(buf.subarray(0, n))
    pos += n
  }
}

/**
 * Runs `use` with drive `driveId`'s image open for positional reads: `feed` reads a range of it into
 * a hash, through one of the process's pooled 1 MiB buffers (the downloads' pool).
 */
async function readingBack (storage: DriveStorage, driveId: string, use: (feed: (hash: OffThreadSha256, range: ChunkRange) => Promise<void>) => Promise<void>): Promise<void> {
  if (storage.openForRead === undefined) throw new Error('the drive storage has no positional reads')
  const reader = await storage.openForRead(driveId)
  const buf = downloadBuffers.take()
  try {
    // each read has ended (and update() copied its bytes) when feed settles: buf is free after it
    await use(async (hash, range) => { await feedRange(reader, hash, range, buf) })
  } finally {
    downloadBuffers.give(buf)
    await reader.close()
  }
}

/**
 * Reads the chunks recorded ahead of `r`'s running hash, in order from its next one, back from the
 * image into it, in the background (storage with positional reads only: on rbd a range read
 * exports the image from its start, so there the job reads the image once instead). A failure
 * forgets the running hash: the upload's job then reads the image.
 */
function readAhead (inFlight: ChunksInFlight, storage: DriveStorage, driveId: string, r: RunningHash): void {
  if (r.readingBack !== undefined || r.dropped || storage.openForRead === undefined || !r.ahead.has(r.next)) return
  r.readingBack = readingBack(storage, driveId, async (feed) => {
    while (!r.dropped && r.ahead.has(r.next)) {
      r.hash ??= new OffThreadSha256()
      await feed(r.hash, r.ahead.get(r.next)!)
      r.ahead.delete(r.next)
      r.next++
      r.readBack++
    }
  }).catch(() => { forget(inFlight, driveId, r) }).then(() => {
    // never rejects: a last chunk's request waits for it inside its transaction
    r.readingBack = undefined
    if (r.dropped) return
    try {
      r.hash?.park()
    } catch {
      forget(inFlight, driveId, r)
      return
    }
    // recorded while the reader closed
    readAhead(inFlight, storage, driveId, r)
  })
}

/** An upload's sha256 from its chunk requests: the worker's hashing time, and the chunks read back from the image (InOrderHash). */
export interface ChunksDigest {
  hex: string
  workerMs: number
  /** chunks read back before the last chunk's request (in the background), and by it */
  readBack: { before: number, last: number }
}

/**
 * The sha256 of an upload computed as its chunks arrive, so that the request that records the
 * last one knows the image's digest and finishes the upload itself. While this app receives chunk
 * 0, 1, 2... in order, each is hashed on its way to the disk (on the hash worker thread, in a fork
 * of the upload's running hash). A chunk recorded out of order (resumable.js sends three at a
 * time) waits in the running hash's `ahead`, and is read back from the image into it as soon as the
 * chunks before it are in, while later chunks still arrive; the last chunk's request reads back
 * what is still missing. Chunks received by another process leave a gap this app cannot fill: the
 * job then reads the image. A failed chunk leaves the running hash as it was, so its retry
 * continues the run. Only bytes that are stored and checked are ever hashed.
 */
export class InOrderHash {
  /** the hash to feed this chunk's bytes into, or undefined when it is not the next in order */
  readonly hash: OffThreadSha256 | undefined
  /** the fork was handed on (it became the running hash, or gave the digest) */
  private taken = false

  constructor (private readonly inFlight: ChunksInFlight, private readonly deps: Pick<TransferDeps, 'storage' | 'config'>, private readonly driveId: string,
    private readonly n: number, private readonly range: ChunkRange, private readonly total: number) {
    const running = inFlight.hashes.get(driveId)
    try {
      // a fork: the running state moves on only once this chunk is stored and recorded
      // (none while chunks are read back into it: its next one moves meanwhile)
      if (running === undefined ? n === 0 : running.next === n && running.readingBack === undefined && !running.dropped) {
        this.hash = running?.hash !== undefined ? new OffThreadSha256(running.hash) : new OffThreadSha256()
      }
    } catch {
      // the hash worker failed: the job reads the image to hash it
      this.hash = undefined
    }
  }

  /** This chunk is stored and checked; its record is under way (the last chunk's request may count on it: see digestOfLast). */
  stored (): void {
    let r = this.inFlight.hashes.get(this.driveId)
    if (r === undefined || r.dropped) r = this.track()
    r.pending.set(this.n, this.range)
  }

  /**
   * Inside the transaction that recorded this chunk as the upload's last (so every other one is
   * recorded and committed): the image's sha256, with the worker's hashing time and the chunks read
   * back, when every other chunk went through this app (hashed into the running hash, recorded
   * ahead of it, or stored by a request whose record just committed); undefined otherwise, and the
   * job reads the image. From this chunk's fork, or a fork of the running hash once its read-back
   * under way has ended, the chunks it does not hold are read back from the image, so a failure
   * leaves the running hash as it was; at most config.chunkReadBackMaxBytes of them (this holds
   * the job's row lock and a pool connection), else the job reads the image.
   */
  async digestOfLast (): Promise<ChunksDigest | undefined> {
    if (this.taken) return undefined
    const r = this.inFlight.hashes.get(this.driveId)
    const inHash = (k: number) => r !== undefined && !r.dropped && k < r.next
    // the range of chunk k when it is not in the running hash yet: this one, or one recorded ahead or pending
    const rangeOf = (k: number) => k === this.n ? this.range : r === undefined || r.dropped || inHash(k) ? undefined : r.ahead.get(k) ?? r.pending.get(k)
    for (let k = 0; k < this.total; k++) if (!inHash(k) && rangeOf(k) === undefined) return undefined
    // what is not in the running hash (or this chunk's fork) yet, the read-back under way's share included
    const unhashed = (from: number) => {
      let bytes = 0
      for (let k = from; k < this.total; k++) bytes += rangeOf(k)?.length ?? 0
      return bytes
    }
    if (unhashed(this.hash !== undefined ? this.n + 1 : r?.next ?? 0) > this.deps.config.chunkReadBackMaxBytes) return undefined
    let hash = this.hash
    let from = this.n + 1
    if (hash !== undefined) {
      this.taken = true
    } else {
      if (r === undefined || this.deps.storage.openForRead === undefined) return undefined
      while (r.readingBack !== undefined) await r.readingBack
      if (r.dropped || r.next > this.n) return undefined
      try {
        hash = r.hash !== undefined ? new OffThreadSha256(r.hash) : new OffThreadSha256()
      } catch {
        return undefined
      }
      from = r.next
    }
    const rest: ChunkRange[] = []
    for (let k = from; k < this.total; k++) rest.push(rangeOf(k)!)
    try {
      if (rest.length > 0) await readingBack(this.deps.storage, this.driveId, async (feed) => { for (const range of rest) await feed(hash, range) })
      return { ...await hash.digest(), readBack: { before: r?.readBack ?? 0, last: rest.length } }
    } catch {
      hash.drop()
      return undefined
    }
  }

  /**
   * Before this chunk is recorded, when it arrived out of order (no fork) and every other chunk of
   * the upload went through this app, so that its record is likely the upload's last: waits for
   * the read-back under way (readAhead) to end, holding neither the job row's lock nor a pool
   * connection (only its chunk's claim, as while it received the chunk). The last chunk's
   * transaction then reads back only what is still missing, where it found the read-back behind
   * by more than config.chunkReadBackMaxBytes and left the whole image to a worker (bench:transfer
   * --parallel 3, 1 GiB in chunks of 64 MiB: the job hashed the image after the last answer).
   */
  async catchUp (): Promise<void> {
    if (this.hash !== undefined) return
    for (;;) {
      const r = this.inFlight.hashes.get(this.driveId)
      if (r === undefined || r.dropped || r.readingBack === undefined) return
      // the chunks in the running hash, those recorded ahead of it, and those stored by requests under way (this one among them)
      if (r.next + r.ahead.size + r.pending.size < this.total) return
      // never rejects (readAhead)
      await r.readingBack
    }
  }

  /**
   * Once this chunk is stored: whether its record may be the upload's last with every other
   * chunk through this app (in the running hash, recorded ahead of it, or stored by a request
   * whose record is under way), so that its request may finish the upload (digestOfLast asks the
   * same of every chunk); otherwise the chunk is recorded without a transaction (recordChunk).
   */
  mayFinish (): boolean {
    const r = this.inFlight.hashes.get(this.driveId)
    return r !== undefined && !r.dropped && r.next + r.ahead.size + r.pending.size >= this.total
  }

  /** A running hash of the upload, with nothing in it yet. */
  private track (): RunningHash {
    const r: RunningHash = { next: 0, hash: undefined, ahead: new Map(), pending: new Map(), readBack: 0, readingBack: undefined, dropped: false }
    this.inFlight.hashes.set(this.driveId, r)
    if (this.inFlight.hashes.size > RUNNING_HASHES_MAX) {
      const [oldest, o] = this.inFlight.hashes.entries().next().value!
      forget(this.inFlight, oldest, o)
    }
    return r
  }

  /** This chunk was recorded (`complete`: the upload's last): the running hash moves past it, or takes it ahead. */
  recorded (complete: boolean): void {
    let r = this.inFlight.hashes.get(this.driveId)
    if (complete) {
      if (r !== undefined) forget(this.inFlight, this.driveId, r)
      return
    }
    if (r === undefined || r.dropped) r = this.track()
    r.pending.delete(this.n)
    if (this.hash !== undefined && !this.taken) {
      // the fork holds chunks 0 to this one
      this.taken = true
      this.hash.park()
      r.hash?.drop()
      r.hash = this.hash
      r.next = this.n + 1
      for (const k of r.ahead.keys()) if (k < r.next) r.ahead.delete(k)
    } else if (this.n >= r.next) {
      r.ahead.set(this.n, this.range)
    }
    readAhead(this.inFlight, this.deps.storage, this.driveId, r)
  }

  /** The chunk's request is over: a fork not handed on (the chunk failed) is forgotten. */
  dispose (): void {
    this.inFlight.hashes.get(this.driveId)?.pending.delete(this.n)
    if (this.hash === undefined || this.taken) return
    this.taken = true
    this.hash.drop()
  }
}

export interface ChunkResult {
  chunk: number
  bytes: number
  chunksStored: number
  chunksTotal: number
  complete: boolean
}

interface ChunkLinkRow {
  purpose: string
  expiresAt: Date
  ownerId: string
  driveId: string
  jobId: string | null
  chunkNumber: number | null
  chunkSize: string | null
  /** the drive exists, is the link owner's and is not deleted */
  driveFound: boolean
  size: string | null
  status: string | null
  lockedByJob: string | null
  /** the chunk is recorded as stored */
  stored: boolean
}

/** A chunk link, its drive and whether its chunk is stored: one statement before the body is read. */
async function findChunkLink (deps: TransferDeps, token: string): Promise<ChunkLinkRow> {
  const rows = isToken(token) ? await query<ChunkLinkRow>(deps.pool, FIND_LINK_SQL, [hashToken(token)], 'clonejobs_chunk_link') : []
  return checkLink(rows[0], 'upload_chunk')
}
const FIND_LINK_SQL = `
  SELECT l.purpose, l.expires_at AS "expiresAt", l.owner_id::text AS "ownerId", l.drive_id::text AS "driveId", l.job_id::text AS "jobId",
    l.chunk_number AS "chunkNumber", l.chunk_size::text AS "chunkSize",
    d.id IS NOT NULL AS "driveFound", d.size::text, d.status, d.locked_by_job::text AS "lockedByJob",
    EXISTS (SELECT 1 FROM upload_chunks c WHERE c.drive_id = l.drive_id AND c.number = l.chunk_number) AS stored
  FROM transfer_links l
  LEFT JOIN drives d ON d.id = l.drive_id AND d.owner_id = l.owner_id AND NOT d.deleted
  WHERE l.token_hash = $1`

/** POST <link>: writes the chunk at its offset, records it, and finishes the upload after the last one. */
export async function receiveChunk (deps: TransferDeps, inFlight: ChunksInFlight, token: string, body: Readable, contentLength: number | undefined): Promise<ChunkResult> {
  const t0 = performance.now()
  const startedAt = Date.now()
  const link = await findChunkLink(deps, token)
  const n = link.chunkNumber ?? -1
  const S = Number(link.chunkSize ?? 0)
  if (!link.driveFound || link.status !== 'uploading' || link.lockedByJob !== link.jobId || !link.jobId) {
    throw errors.gone('The upload this link belongs to is over')
  }
  const jobId = link.jobId
  const drive = { id: link.driveId, ownerId: link.ownerId, size: Number(link.size) }
  const range = chunkRange(drive.size, S, n) as ChunkRange
  if (contentLength !== undefined && contentLength !== range.length) {
    throw errors.validation(`Chunk ${n} holds ${range.length} bytes; the body announces ${contentLength}`, 'Content-Length')
  }
  const key = chunkKey(drive.ownerId, drive.id, n)
  if (link.stored) throw chunkStored(n)
  if (inFlight.has(key)) throw beingReceived(n)
  return storeChunk(deps, inFlight, body, {
    drive,
    jobId,
    index: n,
    range,
    chunkSize: S,
    duplicates: 'refuse',
    startedAt,
    t0,
    label: `chunk ${n}`,
    check: (meter) => {
      if (meter.bytes !== range.length) throw errors.validation(`Chunk ${n} must hold ${range.length} bytes; ${meter.bytes} arrived`, 'Content-Length')
    }
  }).catch((err: unknown) => {
    // another process receives this chunk now: refused as a duplicate in this process is
    throw err instanceof ChunkBeingReceived ? beingReceived(n) : err
  })
}

/** One chunk's body, as both chunk protocols store it. */
export interface ChunkBody {
  drive: UploadDrive
  jobId: string
  /** the chunk's number from 0 */
  index: number
  range: ChunkRange
  chunkSize: number
  /** what a chunk recorded already means (see recordChunk) */
  duplicates: 'refuse' | 'accept'
  /** when the request began (Date.now(), performance.now()) */
  startedAt: number
  t0: number
  /** names the chunk in a stream failure's message */
  label: string
  /** the protocol's own error for a body that failed mid-stream, if it has one (else streamFailure) */
  streamError?: (err: unknown) => Error | undefined
  /** checks the stored body (its length), throwing the protocol's error; the chunk is recorded once it resolves */
  check: (meter: Meter) => void | Promise<void>
}

/**
 * Writes a chunk's body at its offset with the chunk marked in flight and claimed (see
 * ChunksInFlight), hashing it into the upload's running sha256 when it is the next in order, then
 * records it: a §5.2 link's chunk, which its caller looked up before it could claim it (the link
 * names the chunk), so it is looked at again under the claim (CHUNK_NOW_SQL). Throws
 * ChunkBeingReceived, with nothing of the body read, when another app or process holds the chunk's
 * claim; and, for `accept`, when the chunk was recorded since the caller looked.
 */
export async function storeChunk (deps: TransferDeps, inFlight: ChunksInFlight, body: Readable, c: ChunkBody): Promise<ChunkResult> {
  return receiving(inFlight, c.drive.ownerId, c.drive.id, c.index, async (lock) => {
    // under the claim no other request writes this chunk: is it still missing from a live upload?
    // (a request that looked before another stored it, or finished the upload, must not write)
    const [now] = await query<{ active: boolean, stored: boolean }>(deps.pool, CHUNK_NOW_SQL, [c.drive.id, c.jobId, c.index], 'clonejobs_chunk_now')
    if (!now.active) throw uploadOver(c.duplicates, c.drive.id)
    if (now.stored) throw c.duplicates === 'refuse' ? chunkStored(c.index) : new ChunkBeingReceived(c.index)
    return storeClaimed(deps, inFlight, lock, body, c)
  })
}

/**
 * storeChunk's work under the chunk's claim (`lock`, taken by receiving), once a look made under
 * it found the chunk missing from a live upload: a caller that looked before it claimed the chunk
 * must look again (storeChunk). resumable.js's POST claims first and looks once (upload-resumable.ts).
 */
export async function storeClaimed (deps: TransferDeps, inFlight: ChunksInFlight, lock: SessionLock, body: Readable, c: ChunkBody): Promise<ChunkResult> {
  const claim = lock.signal
  const inOrder = new InOrderHash(inFlight, deps, c.drive.id, c.index, c.range, chunkCount(Number(c.drive.size), c.chunkSize))
  try {
    const bodyAt = performance.now()
    const meter = new Meter(c.range.length, inOrder.hash ?? false, undefined, { move: yieldsSocketReads(body) })
    try {
      // the claim's connection failing stops the write: the chunk may be another request's by then
      await pipeline(body, meter, await deps.storage.createWriteStream(c.drive.id, { start: c.range.start, written: meter.written }), { signal: claim })
    } catch (err) {
      body.resume()
      if (claim.aborted) throw claimLost(c.index)
      throw c.streamError?.(err) ?? streamFailure(err, c.label)
    }
    const stored = performance.now()
    await c.check(meter)
    if (claim.aborted) throw claimLost(c.index)
    inOrder.stored()
    await inOrder.catchUp()
    const r = await recordChunk(deps, c.drive, c.jobId, c.index, c.range.length, c.chunkSize, c.duplicates, {
      digest: async () => inOrder.digestOfLast(),
      alone: !inOrder.mayFinish(),
      timing: chunkTiming(c.startedAt, c.t0, bodyAt, meter, stored),
      claim: lock
    })
    inOrder.recorded(r.complete)
    return r
  } finally {
    inOrder.dispose()
  }
}

// $1 drive, $2 the upload's job, $3 chunk number (resumable.js's LOCATE_SQL, run under the claim,
// share-locks the drive row to the same end). The drive row is key-share locked: a DELETE
// that found no chunk of the upload claimed holds the row until it commits, so a chunk claimed
// after that look waits here for the DELETE and then finds the upload over (deleteDrivesIn)
const CHUNK_NOW_SQL = `
  SELECT EXISTS (SELECT 1 FROM drives WHERE id = $1::uuid AND status = 'uploading' AND locked_by_job = $2::uuid AND NOT deleted FOR KEY SHARE) AS active,
    EXISTS (SELECT 1 FROM upload_chunks WHERE drive_id = $1::uuid AND number = $3::int) AS stored`

/**
 * Runs `receive` with chunk `n` of drive `driveId` marked in flight in this app (chunkKey) and
 * claimed across processes (member n of the chunkClaimGroup of `ownerId`'s drive), until it
 * settles (both protocols). `receive` gets the claim, whose signal is aborted if it is lost.
 * ChunkBeingReceived when another app or process holds it.
 */
export async function receiving<T> (inFlight: ChunksInFlight, ownerId: string, driveId: string, n: number, receive: (claim: SessionLock) => Promise<T>): Promise<T> {
  const key = chunkKey(ownerId, driveId, n)
  let settle!: () => void
  inFlight.set(key, new Promise(resolve => { settle = resolve }))
  try {
    let claim
    try {
      claim = await inFlight.claims.tryLock(memberName(chunkClaimGroup(ownerId, driveId), n))
    } catch (err) {
      throw databaseFailure(err) ?? err
    }
    if (claim === undefined) throw new ChunkBeingReceived(n)
    try {
      return await receive(claim)
    } finally {
      await claim.release()
    }
  } finally {
    inFlight.delete(key)
    settle()
  }
}

/**
 * The number of chunks stored of an upload into drive `drive` of `size` bytes in chunks of `S`
 * bytes, from `bytes`, what they hold (its job's bytes_done, which every chunk's record moves
 * under the job's row lock; SQL expressions all four). Every chunk holds S bytes but the last,
 * which holds S to 2S - 1 (it takes the remainder: chunkRange), so until the last one is stored
 * they are bytes / S, rounded down, without reading upload_chunks: a count of its rows, once
 * per chunk, had each record read every row before it, under the job's row lock (bench/chunk-depth.ts:
 * a chunk after 100,000 took twice the time of an early one). Once the bytes reach the image's
 * size, the rows are counted: the count that completes an upload is never taken on trust.
 * `unseen`: rows the statement inserted itself (which its own reads do not see).
 */
export function chunksStoredSql (bytes: string, drive: string, size: string, S: string, unseen = '0'): string {
  return `CASE WHEN ${bytes} >= ${size}::bigint THEN (SELECT count(*) FROM upload_chunks WHERE drive_id = ${drive}::uuid) + ${unseen}
    ELSE floor(${bytes}::numeric / ${S}::numeric) END`
}

/** How many chunks the upload (job `jobId`) into drive `driveId` of `size` bytes in chunks of `S` bytes has stored. */
export async function storedChunks (db: Tx | TransferDeps['prisma'], driveId: string, jobId: string, size: number, S: number): Promise<number> {
  const [row] = await db.$queryRawUnsafe<Array<{ count: number }>>(
    `SELECT (${chunksStoredSql('j.bytes_done', '$1', '$3', '$4')})::int AS count FROM (SELECT COALESCE((SELECT bytes_done FROM jobs WHERE id = $2::uuid), 0) AS bytes_done) j`,
    driveId, jobId, size, S)
  return row.count
}

/** The drive of an upload, as recordChunk needs it. */
export interface UploadDrive { id: string, ownerId: string, size: number | bigint }

/** Where one chunk request's time went (ms); the upload's job sums them in params.timing. */
export interface ChunkTiming {
  /** when the request began (Date.now()): the job keeps the earliest, in params.firstChunkAt */
  startedAt: number
  /** finding the link, the drive, the chunk (before the body is read) */
  lookupsMs: number
  /** from the first byte read to the last (the hash's share included) */
  receiveMs: number
  /** the event loop's share of hashing (copying to the hash worker, waiting when it is behind) */
  hashMs: number
  /** the end of the body to the chunk being on disk (the writer's fsync, after its write-back) */
  fsyncMs: number
  /** bytes of the body that moved to the hash worker without a copy (not a time) */
  movedBytes: number
}

export function chunkTiming (startedAt: number, t0: number, bodyAt: number, meter: Meter, stored: number): ChunkTiming {
  const ended = meter.endedAt ?? stored
  return { startedAt, lookupsMs: bodyAt - t0, receiveMs: ended - bodyAt, hashMs: meter.hashMs, fsyncMs: stored - ended, movedBytes: meter.movedBytes ?? 0 }
}

/** The upload is over (its drive finished, failed or gone): the protocol's error. */
function uploadOver (duplicates: 'refuse' | 'accept', driveId: string): DomainError {
  // §5.2 clients hold a link, which is gone (410) with the upload; resumable.js retries anything
  // but 400/404/415/500/501 at once, so it is told 400 (the drive's state)
  return duplicates === 'refuse' ? errors.gone('The upload this link belongs to is over') : errors.wrongState(`The upload into drive ${driveId} is over`)
}

/** What a chunk's request knows once the chunk is stored. */
export interface StoredChunk {
  /**
   * the image's sha256, asked for in the transaction that records the upload's last chunk
   * (InOrderHash.digestOfLast); it resolves to undefined when the request cannot tell it
   */
  digest: () => Promise<ChunksDigest | undefined>
  timing: ChunkTiming
  /**
   * recorded in one statement with no transaction around it (recordOne): this request is not
   * expected to finish the upload (InOrderHash.mayFinish)
   */
  alone?: boolean
  /** the chunk's claim: recorded only while it is still held */
  claim: Pick<SessionLock, 'pid' | 'name'>
}

interface RecordRow {
  /** the chunk's claim was still this request's */
  held: boolean
  inserted: number
  count: number
  bytes: string
  updated: boolean
  params: { timing?: Partial<Record<string, number>>, firstChunkAt?: number } | null
}

/**
 * Records chunk `n` (from 0) as stored and moves the job's progress. The last chunk completes the
 * upload (exactly once: the job row lock orders concurrent last chunks): when its request can tell
 * the image's digest (every chunk went through this app: InOrderHash.digestOfLast), it finishes the
 * upload in the same transaction (the drive leaves `uploading`, the job succeeds); otherwise it makes the job due, so a worker
 * hashes the image and finishes it. A chunk stored already is 416 (`refuse`, §5.2) or answered as
 * stored (`accept`, resumable.js, where the same chunk twice is idempotent). With chunk.alone,
 * one statement with no transaction around it (recordOne).
 */
export async function recordChunk (deps: TransferDeps, drive: UploadDrive, jobId: string, n: number, length: number, S: number, duplicates: 'refuse' | 'accept', chunk: StoredChunk): Promise<ChunkResult> {
  const size = Number(drive.size)
  const total = chunkCount(size, S)
  const over = () => uploadOver(duplicates, drive.id)
  const { startedAt, ...sums } = chunk.timing
  const t0 = performance.now()
  if (chunk.alone === true) return recordOne(deps, drive, jobId, n, length, S, duplicates, chunk, t0)
  // chunks of one upload are recorded one at a time: without the job's row lock, taken with BEGIN
  // (one round trip), two last chunks arriving together could each miss the other's row, so neither
  // would see the upload complete (the statement below takes its snapshot once the lock is held, so
  // it sees every earlier chunk)
  return pgTransaction(deps.pool, async (client) => {
    // one statement: the claim still held, the chunk's row, the job's progress, and unless this
    // request finishes the upload, the change event (and the NOTIFY that makes a complete upload's job due)
    const [r] = await query<RecordRow>(client, RECORD_SQL,
      [drive.id, n, length, size, total, JSON.stringify({ chunks: 1, ...sums }), startedAt, jobId,
        chunk.claim.pid, chunk.claim.name, drive.ownerId, S], 'clonejobs_chunk_record')
    if (!r.held) throw claimLost(n)
    const result = { chunk: n, bytes: length, chunksStored: r.count, chunksTotal: total, complete: r.count >= total }
    if (r.inserted === 0) {
      if (duplicates === 'refuse') throw chunkStored(n)
      return result
    }
    if (!r.updated) throw over()
    const digest = result.complete ? await chunk.digest() : undefined
    if (result.complete && (digest === undefined || !await finishInRequest(deps, client, drive, jobId, total, digest, r.params, t0))) {
      // the sha256 is not known here, or the job could not be had (a cancel was requested): a worker takes it
      await query(client, 'SELECT pg_notify($1, $2)', [CHANNELS.jobs, jobId], 'clonejobs_chunk_notify')
      await publishChange(client, { ownerId: drive.ownerId, resourceType: 'jobs', resourceId: jobId })
    }
    return result
  }, { begin: lockJobSql(jobId) })
}

interface RecordOneRow { held: boolean, inserted: number, live: boolean, stored: boolean, bytes: string | null, params: RecordRow['params'] }

/**
 * How long a job whose upload a record without a transaction completed waits for that request to
 * finish it (s): if its process stops first, a worker takes the job then.
 */
export const FINISH_AFTER_RECORD_SECONDS = 30

/**
 * recordChunk for a chunk whose request is not expected to finish the upload (chunk.alone: by
 * what this app saw, another chunk's record is still to come, or not every chunk came through
 * it): one statement (RECORD_ONE_SQL), which commits by itself, where the transaction takes three
 * round trips (BEGIN with the job's row lock, the statement, COMMIT). bench:transfer with
 * resumable.js's 1 MiB chunks: a chunk's request made six round trips to PostgreSQL against the
 * bare server's none. Should it complete the upload after all (the chunks after it, sent at the
 * same time, were recorded first), its request finishes the upload in a transaction of its own
 * (finishAfterRecord) if it can tell the digest; if not, the statement made the job due, and a
 * worker hashes the image.
 */
async function recordOne (deps: TransferDeps, drive: UploadDrive, jobId: string, n: number, length: number, S: number, duplicates: 'refuse' | 'accept', chunk: StoredChunk, t0: number): Promise<ChunkResult> {
  const size = Number(drive.size)
  const total = chunkCount(size, S)
  const { startedAt, ...sums } = chunk.timing
  const [r] = await query<RecordOneRow>(deps.pool, RECORD_ONE_SQL,
    [drive.id, n, length, size, total, JSON.stringify({ chunks: 1, ...sums }), startedAt, jobId,
      chunk.claim.pid, chunk.claim.name, drive.ownerId, S], 'clonejobs_chunk_record_one')
  if (!r.held) throw claimLost(n)
  const bytes = Number(r.bytes ?? 0)
  const count = bytes >= size ? total : Math.floor(bytes / S)
  const result = { chunk: n, bytes: length, chunksStored: count, chunksTotal: total, complete: count >= total }
  if (r.inserted === 0) {
    // stored already (a row this statement waited for is one too, while the upload is live)
    if (!r.live && !r.stored) throw uploadOver(duplicates, drive.id)
    if (duplicates === 'refuse') throw chunkStored(n)
  } else if (result.complete) {
    await finishAfterRecord(deps, drive, jobId, total, chunk.digest, r.params, t0)
  }
  return result
}

/**
 * The upload that a record without a transaction completed (recordOne; the statement left the
 * job due in FINISH_AFTER_RECORD_SECONDS, announcing nothing): finished here
 * as recordChunk's transaction finishes it, under the job's row lock, once a count of the chunk
 * rows confirms it complete. When they do not, or the digest cannot be told after all, or the job
 * cannot be had, the job is made due now for a worker (which counts the rows again). A failure is
 * logged, not answered: the chunk is recorded, and a worker takes the job when it falls due.
 */
async function finishAfterRecord (deps: TransferDeps, drive: UploadDrive, jobId: string, total: number, digestOf: () => Promise<ChunksDigest | undefined>, params: RecordRow['params'], t0: number): Promise<void> {
  try {
    await pgTransaction(deps.pool, async (client) => {
      // the bytes said complete: the rows confirm it, as RECORD_SQL's count does (chunksStoredSql)
      const [{ n }] = await query<{ n: number }>(client, 'SELECT count(*)::int AS n FROM upload_chunks WHERE drive_id = $1::uuid', [drive.id], 'clonejobs_chunk_rows')
      const digest = n >= total ? await digestOf() : undefined
      if (digest !== undefined && await finishInRequest(deps, client, drive, jobId, total, digest, params, t0)) return
      await query(client, DUE_NOW_SQL, [jobId, CHANNELS.jobs], 'clonejobs_chunk_due_now')
      await publishChange(client, { ownerId: drive.ownerId, resourceType: 'jobs', resourceId: jobId })
    }, { begin: lockJobSql(jobId) })
  } catch (err) {
    deps.log.warn({ err, jobId, driveId: drive.id }, `the upload's last chunk is recorded but its request could not finish the upload; a worker finishes it within ${FINISH_AFTER_RECORD_SECONDS} s`)
  }
}

/**
 * The SET list of a chunk's record (RECORD_SQL, RECORD_ONE_SQL; SQL expressions all four):
 * bytes_done becomes `bytes`, the progress and description follow from it and `count` (chunks
 * stored), the job falls due at `dueAt` once `complete` (a worker finishes the upload unless a
 * request does), else at the idle deadline; the request's time split ($6) is added to the job's
 * and its start ($7) kept if it is the first. $4 the image's size, $5 chunks in all.
 */
function recordSetSql (bytes: string, count: string, complete: string, dueAt: string): string {
  return `
      bytes_done = ${bytes},
      progress = LEAST(99, floor(${bytes} * 100 / $4::numeric))::int,
      description = CASE WHEN ${complete} THEN 'all chunks received; verifying the image'
        ELSE format('received %s of %s chunks', ${count}, $5::int) END,
      run_at = CASE WHEN ${complete} THEN ${dueAt} ELSE now() + make_interval(secs => ${CHUNKED_UPLOAD_IDLE_SECONDS}) END,
      last_modified = now(),
      params = jobs.params || jsonb_build_object(
        'timing', (SELECT jsonb_object_agg(x.key, COALESCE((jobs.params -> 'timing' ->> x.key)::float8, 0) + x.value::float8)
          FROM jsonb_each_text($6::jsonb) AS x),
        'firstChunkAt', LEAST(COALESCE((jobs.params ->> 'firstChunkAt')::float8, $7::float8), $7::float8))`
}

/** The first statement of a transaction that records or finishes a chunked upload: its job's row lock (sent with BEGIN: pgTransaction's `begin`). */
const lockJobSql = (jobId: string) => `SELECT 1 FROM jobs WHERE id = ${pg.escapeLiteral(jobId)}::uuid FOR UPDATE`

// $1 the job, $2 the jobs channel: due now, and a worker woken
const DUE_NOW_SQL = `
  WITH u AS (UPDATE jobs SET run_at = now() WHERE id = $1::uuid AND state = 'started' AND locked_by IS NULL RETURNING 1)
  SELECT count(pg_notify($2::text, $1::text)) AS n FROM u`

// recordOne's statement, RECORD_SQL without a transaction around it: the job's row is locked
// first (`live`, FOR UPDATE), so the records of one upload still run one at a time, and a chunk's
// row is written only while the upload is live (parked: started, no lease). The statement's
// snapshot is older than that lock, so what it adds to bytes_done is read from the row as the
// UPDATE finds it locked (jobs.bytes_done in SET: the latest version, which a snapshot read of the
// row in another WITH item would miss), and the upload is complete when they reach the image's
// size: each chunk's row is inserted once (its key) and adds its length, which the geometry fixes,
// so the bytes reach the size only when every chunk is in; what then finishes it counts the rows
// first (finishAfterRecord, or the worker: driveUploadHandler). $1 drive, $2 chunk number, $3 its
// bytes, $4 the image's size, $5 chunks in all, $6 the request's time split (JSON), $7 when it
// began (ms), $8 the upload's job, $9 and $10 the claim, $11 the owner, $12 the chunk size.
// A record that completes the upload leaves the job due in FINISH_AFTER_RECORD_SECONDS and
// announces nothing: its request finishes it, or makes it due now and announces it
// (finishAfterRecord). `stored` is read from the snapshot: a chunk recorded before the upload ended.
const RECORD_ONE_SQL = `
  WITH claim AS (SELECT ${heldSql('$9', '$10')} AS held),
  live AS (SELECT id FROM jobs WHERE id = $8::uuid AND state = 'started' AND locked_by IS NULL FOR UPDATE),
  ins AS (
    INSERT INTO upload_chunks (drive_id, number, size) SELECT $1::uuid, $2::int, $3::bigint FROM claim, live WHERE claim.held
    ON CONFLICT DO NOTHING
    RETURNING size
  ),
  u AS (
    UPDATE jobs SET
${recordSetSql('(jobs.bytes_done + i.size)', 'floor((jobs.bytes_done + i.size) / $12::numeric)', 'jobs.bytes_done + i.size >= $4::bigint',
  `now() + make_interval(secs => ${FINISH_AFTER_RECORD_SECONDS})`)}
    FROM (SELECT sum(size) AS size FROM ins) i
    WHERE jobs.id = $8::uuid AND i.size IS NOT NULL
    RETURNING jobs.bytes_done AS bytes, jobs.params
  ),
  ${publishEventsSql('SELECT $11::uuid AS owner_id, \'jobs\' AS resource_type, $8::text AS resource_id, \'changed\' AS change FROM u WHERE u.bytes < $4::bigint')}
  SELECT (SELECT held FROM claim) AS held, (SELECT count(*) FROM ins)::int AS inserted, EXISTS (SELECT 1 FROM live) AS live,
    EXISTS (SELECT 1 FROM upload_chunks WHERE drive_id = $1::uuid AND number = $2::int) AS stored,
    COALESCE((SELECT bytes FROM u), (SELECT bytes_done FROM jobs WHERE id = $8::uuid))::text AS bytes, (SELECT params FROM u) AS params,
    (SELECT n FROM notified) AS notifies`

// recordChunk's statement: the claim, the chunk's row, the count, the job's progress and
// deadline, the time split so far, the change event. The bytes stored are the job's bytes_done
// (read after the job's row lock was taken, so every earlier record's) plus this chunk's; the
// count follows from them (chunksStoredSql). $1 drive, $2 chunk number, $3 its bytes,
// $4 the image's size, $5 chunks in all, $6 the request's time split (JSON), $7 when it began
// (ms), $8 the upload's job, $9 and $10 the claim (its connection's pid, its name), $11 the owner,
// $12 the chunk size. A record that completes the upload publishes nothing: its request finishes
// the upload and publishes with that, or, when it cannot tell the digest, publishes and notifies
// itself. The claim is looked at after the job's row lock: a claims connection that died is
// noticed by its signal only at the next ping, and by then another process may have claimed the
// chunk and be writing it.
const RECORD_SQL = `
  WITH claim AS (SELECT ${heldSql('$9', '$10')} AS held),
  ins AS (
    INSERT INTO upload_chunks (drive_id, number, size) SELECT $1::uuid, $2::int, $3::bigint FROM claim WHERE claim.held
    ON CONFLICT DO NOTHING
    RETURNING size
  ),
  sums AS (SELECT COALESCE((SELECT bytes_done FROM jobs WHERE id = $8::uuid), 0) + (SELECT COALESCE(sum(size), 0) FROM ins) AS bytes),
  agg AS (SELECT sums.bytes, ${chunksStoredSql('sums.bytes', '$1', '$4', '$12', '(SELECT count(*) FROM ins)')} AS count FROM sums),
  u AS (
    UPDATE jobs SET
${recordSetSql('agg.bytes', 'agg.count', 'agg.count >= $5::int', 'now()')}
    FROM agg
    WHERE jobs.id = $8::uuid AND jobs.state = 'started' AND jobs.locked_by IS NULL AND EXISTS (SELECT 1 FROM ins)
    RETURNING jobs.params
  ),
  -- what publishChange would write, unless this request finishes the upload (its finish publishes)
  ${publishEventsSql(`
    SELECT $11::uuid AS owner_id, 'jobs' AS resource_type, $8::text AS resource_id, 'changed' AS change
    FROM u, agg WHERE agg.count < $5::int`)}
  -- notifies is read so that the NOTIFYs run: a plain SELECT in WITH runs only when referenced
  SELECT (SELECT held FROM claim) AS held, (SELECT count(*) FROM ins)::int AS inserted, agg.count::int AS count, agg.bytes::text AS bytes,
    EXISTS (SELECT 1 FROM u) AS updated, (SELECT params FROM u) AS params, (SELECT n FROM notified) AS notifies
  FROM agg`

/**
 * The last chunk of an upload hashed in order: this request finishes it, in the transaction that
 * records the chunk. The job is leased to this process for that (as a raw upload's is), so its log
 * and outcome are written like any job's. False when the job cannot be had (a cancel was
 * requested): a worker then takes it as usual.
 */
async function finishInRequest (deps: TransferDeps, tx: pg.PoolClient, drive: UploadDrive, jobId: string, total: number, digest: ChunksDigest, params: RecordRow['params'], t0: number): Promise<boolean> {
  const size = Number(drive.size)
  const row = await deps.engine.take(tx, jobId, 'started')
  if (row === undefined) return false
  await finishUploadedDrive(tx, drive.ownerId, drive.id, jobId)
  // nothing between hold() and finish() can throw before finish() ends the hold
  const held = deps.engine.hold(row, size)
  const { before, last } = digest.readBack
  const how = before + last === 0
    ? 'in order, on a worker thread'
    : `on a worker thread, the ${before + last} that arrived out of order read back from the image: ${before} as the chunks before them came in, ${last} by the last chunk's request`
  held.log(`all ${total} chunks received; their sha256 was computed as they arrived, ${how}: ${digest.hex}`)
  held.log(chunkedTimeSplit(params, digest.workerMs) + `; settle ${Math.round(performance.now() - t0)} ms`)
  held.describe(`received ${formatBytes(size)} in ${total} chunks`)
  await held.finish(tx, { state: 'success', result: { sha256: digest.hex, bytes: size } })
  return true
}

/**
 * The job-log line of a chunked upload's time (its `time split`), from the sums its chunks left in
 * params: the wall time from the first chunk's request to `endAt` (Date.now()), what the chunk
 * requests spent on lookups, receiving (hashing), fsync, and the rest, which is outside them
 * (the client's link requests and its time between chunks) or recording each chunk.
 */
export function chunkedTimeSplit (params: { timing?: Partial<Record<string, number>>, firstChunkAt?: number } | null, workerHashMs?: number, endAt = Date.now()): string {
  const t = params?.timing
  const first = params?.firstChunkAt
  if (t === undefined || first === undefined) return 'time split: not recorded'
  const ms = (n: number | undefined) => `${Math.max(0, Math.round(n ?? 0))} ms`
  const wall = endAt - first
  const inRequests = (t.lookupsMs ?? 0) + (t.receiveMs ?? 0) + (t.fsyncMs ?? 0)
  const moved = t.movedBytes === undefined ? '' : `, ${formatBytes(t.movedBytes)} of the bodies handed to it without a copy`
  const worker = workerHashMs === undefined ? '' : `; ${ms(workerHashMs)} hashing on a worker thread meanwhile${moved}`
  return `time split: ${t.chunks ?? 0} chunks in ${ms(wall)} from the first chunk's request; in the chunk requests (summed): ` +
    `lookups ${ms(t.lookupsMs)}, receive ${ms(t.receiveMs)} (of which hash ${ms(t.hashMs)}${worker}), fsync ${ms(t.fsyncMs)}; ` +
    `outside them or recording them ${ms(wall - inRequests)} (link requests, the client between chunks)`
}
