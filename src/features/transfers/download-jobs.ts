// Downloads: direct (Range) and one-time links, each a request-held drive_download job.
import type { PrismaClient, Tx } from '../../db/client.ts'
import type { TransferLink } from '../../db/generated/client.ts'
import { ApiError, errors, type DomainError } from '../../http/errors.ts'
import { ref, type Ref } from '../../http/uris.ts'
import { requestCancel } from '../../engine/cancel.ts'
import { enqueueJob } from '../../engine/enqueue.ts'
import type { HeldJob } from '../../engine/held.ts'
import { assertDriveUsable, loadOwnedDrive, type DriveRow } from '../drives/service.ts'
import { downloadLinkPath, findLink, newToken } from './links.ts'
import { type TransferDeps } from './service.ts'

// ---------------------------------------------------------------------------------------------
// Downloads

const NOT_DOWNLOADABLE = ['creating', 'uploading', 'cloning_dst']

export function assertDownloadable (drive: DriveRow): void {
  if (NOT_DOWNLOADABLE.includes(drive.status)) throw errors.wrongState(`Drive ${drive.id} cannot be downloaded while its status is ${drive.status}`)
  if (drive.storageType === 'local_nvme') throw errors.wrongState(`Drive ${drive.id} is ephemeral and cannot be downloaded`)
  assertDriveUsable(drive, 'download')
}

export interface ByteRange { start: number, end: number }

/**
 * The single byte range of a `Range` header for an image of `size` bytes: undefined means the
 * whole image (no header, or a form we do not serve partially, such as several ranges).
 */
export function parseRange (header: string | undefined, size: number): ByteRange | undefined {
  if (!header) return undefined
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header)
  if (!m || (m[1] === '' && m[2] === '')) return undefined
  let start: number
  let end: number
  if (m[1] === '') {
    const suffix = Number(m[2])
    if (suffix === 0) throw unsatisfiable(size)
    start = Math.max(0, size - suffix)
    end = size - 1
  } else {
    start = Number(m[1])
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1)
    if (m[2] !== '' && Number(m[2]) < start) return undefined // invalid: ignored (RFC 9110)
  }
  if (start >= size || size === 0) throw unsatisfiable(size)
  return { start, end }
}

function unsatisfiable (size: number): ApiError {
  return new ApiError(416, 'validation', `The requested range is outside the image (${size} bytes)`, 'Range', { 'content-range': `bytes */${size}` })
}

/** A job for a plain authenticated download (GET /drives/{uuid}/download/), held by the request. */
export async function startDirectDownload (deps: TransferDeps, ownerId: string, driveId: string, range: (size: number) => ByteRange | undefined): Promise<{ held: HeldJob, drive: DriveRow, range: ByteRange | undefined }> {
  const { row, bytes, drive, r } = await deps.prisma.$transaction(async (tx) => {
    const drive = await loadOwnedDrive(tx, ownerId, driveId)
    assertDownloadable(drive)
    const size = Number(drive.size)
    const r = range(size)
    const bytes = r ? r.end - r.start + 1 : size
    const row = await deps.engine.enqueueHeld(tx, {
      ownerId,
      operation: 'drive_download',
      params: { driveId: drive.id, mode: 'direct', start: r?.start ?? 0, bytes },
      resources: [{ type: 'drives', id: drive.id, mode: 'read' }],
      bytesTotal: bytes,
      description: `sending ${bytes} bytes`
    })
    return { row, bytes, drive, r }
  })
  // held once its row is committed: a heartbeat before that finds no such job, takes the lease
  // for lost, and the download's end could then not be recorded
  return { held: deps.engine.hold(row, bytes), drive, range: r }
}

/** ?do=download: a one-time link that must be started within DOWNLOAD_LINK_TTL, and its job. */
export async function createDownloadLink (deps: TransferDeps, ownerId: string, driveId: string): Promise<{ job: Ref, url: string }> {
  return deps.prisma.$transaction(async (tx) => {
    const drive = await loadOwnedDrive(tx, ownerId, driveId, { lock: true })
    assertDownloadable(drive)
    const expiresAt = new Date(Date.now() + deps.config.downloadLinkTtlSeconds * 1000)
    const { id: jobId } = await enqueueJob(tx, {
      ownerId,
      operation: 'drive_download',
      params: { driveId: drive.id, mode: 'link' },
      resources: [{ type: 'drives', id: drive.id, mode: 'read' }],
      bytesTotal: Number(drive.size),
      description: 'waiting for the download to start',
      // not started by then: a worker claims it and cancels it
      runAt: expiresAt,
      maxAttempts: 1
    })
    const { token, hash } = newToken()
    await tx.transferLink.create({ data: { tokenHash: hash, ownerId, driveId: drive.id, jobId, purpose: 'download', expiresAt } })
    return { job: ref('jobs', jobId), url: downloadLinkPath(token) }
  })
}

const linkUsed = (): DomainError => errors.gone('This download link has been used already')
const linkCancelled = (): DomainError => errors.gone('The download of this link was cancelled')

/** The drive a download link sends, if it can be sent (410 when it is gone). */
async function linkDrive (db: PrismaClient | Tx, link: TransferLink): Promise<DriveRow> {
  const drive = await db.drive.findFirst({ where: { id: link.driveId, ownerId: link.ownerId, deleted: false } })
  if (!drive) throw errors.gone('The drive of this link is gone')
  assertDownloadable(drive)
  return drive
}

/** GET <download link>: uses the link up (a second use is 410) and takes its job's lease. */
export async function useDownloadLink (deps: TransferDeps, token: string): Promise<{ held: HeldJob, drive: DriveRow }> {
  const link = await findLink(deps.prisma, token, 'download')
  const { row, drive } = await deps.prisma.$transaction(async (tx) => {
    const used = await tx.transferLink.updateMany({
      where: { tokenHash: link.tokenHash, usedAt: null, expiresAt: { gt: new Date() } },
      data: { usedAt: new Date() }
    })
    if (used.count === 0) throw linkUsed()
    const row = link.jobId ? await deps.engine.take(tx, link.jobId, 'queued') : undefined
    if (!row) throw linkCancelled()
    return { row, drive: await linkDrive(tx, link) }
  })
  // held once the transaction has committed (a refusal above leaves no handle behind)
  return { held: deps.engine.hold(row, Number(drive.size)), drive }
}

/**
 * HEAD <download link>: the drive its GET would send, or the GET's refusal (404, 410), without
 * using the link or taking its job (the job's lease is what the GET takes: queued, free, not
 * being cancelled).
 */
export async function peekDownloadLink (deps: TransferDeps, token: string): Promise<DriveRow> {
  const link = await findLink(deps.prisma, token, 'download')
  if (link.usedAt) throw linkUsed()
  const job = link.jobId ? await deps.prisma.job.findUnique({ where: { id: link.jobId }, select: { state: true, lockedBy: true, cancelRequested: true } }) : null
  if (job?.state !== 'queued' || job.lockedBy !== null || job.cancelRequested) throw linkCancelled()
  return linkDrive(deps.prisma, link)
}

/** Cancels a download job whose link was not used in time (called by its handler at the deadline). */
export async function cancelUnusedDownload (prisma: PrismaClient, jobId: string): Promise<boolean> {
  return prisma.$transaction(async (tx) => {
    const unused = await tx.transferLink.updateMany({ where: { jobId, purpose: 'download', usedAt: null }, data: { usedAt: new Date() } })
    if (unused.count === 0) return false
    await requestCancel(tx, [jobId])
    return true
  })
}
