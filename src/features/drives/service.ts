// Drives: create, update, resize, delete and list (spec §2), the wire form of a drive row, and
// the busy/state checks the clone, upload and server services share.
import { randomUUID } from 'node:crypto'
import { query, type Sql } from '../../db/sql.ts'
import { groupHeldSql } from '../../db/session-locks.ts'
import { chunkClaimGroup } from '../../domain/chunks.ts'
import type { Drive as DriveRow } from '../../db/generated/client.ts'
import type { PrismaClient, Tx } from '../../db/client.ts'
import { domainErrors as errors, naming } from '../../domain/errors.ts'
import { envelope, planList, type ListEnvelope } from '../../http/listing.ts'
import { isUuid, tagIds } from '../../http/bodies.ts'
import { ref, uri } from '../../http/uris.ts'
import type { FilterSpec, OrderSpec } from '../../domain/filters.ts'
import type { CloneSource } from '../../domain/clone-plan.ts'
import {
  DEFAULT_STORAGE_TYPE, DRIVE_STATUSES, MEDIA, RESTING_STATUSES, STORAGE_TYPES,
  badMetaKey, canOperate, displayStatus, editableFields, isServerActive, restingStatus, runtimeFlags,
  type DriveOperation
} from '../../domain/drive-status.ts'
import { enqueueJob, newJobId } from '../../engine/enqueue.ts'
import { requestCancel } from '../../engine/cancel.ts'
import { lockResources } from '../../engine/resources.ts'
import { publishChange, type ChangeKind } from '../../engine/events.ts'
import { jobRefsFor } from '../jobs/view.ts'
import { MAX_DRIVE_SIZE, type DrivePlacement } from '../../storage/index.ts'
import { availabilityGroups, groupOf } from '../../domain/availability.ts'
import { DRIVE_FIELDS, type DriveCreateInputT, type DriveUpdateInputT, type DriveWire } from './schemas.ts'

export type { DriveRow }
type Db = PrismaClient | Tx

export interface DrivesDeps {
  prisma: PrismaClient
  /** Largest drive, in bytes (config.driveMaxSize, capped by what the storage can hold). */
  driveMaxSize: number
}

export function maxDriveSize (configured: number): number {
  return Math.min(configured, MAX_DRIVE_SIZE)
}

// ---------------------------------------------------------------------------------------------
// Wire form

export interface DriveExtras {
  jobIds: string[]
  serverIds: string[]
}

export function driveToWire (row: DriveRow, extras: DriveExtras = { jobIds: [], serverIds: [] }): DriveWire {
  const flags = runtimeFlags(row.storageType, row.status)
  return {
    affinities: row.affinities,
    allow_multimount: row.allowMultimount,
    backup_scheduler: null,
    grantees: [],
    iops: row.iops,
    jobs: extras.jobIds.map(id => ref('jobs', id)),
    licenses: [],
    media: row.media as DriveWire['media'],
    meta: (row.meta ?? {}) as Record<string, string>,
    mounted_on: extras.serverIds.map(id => ref('servers', id)),
    name: row.name,
    owner: ref('user', row.ownerId),
    permissions: [],
    remote_snapshots: [],
    resource_uri: uri('drives', row.id),
    runtime: {
      is_downloadable: flags.is_downloadable,
      is_ephemeral: flags.is_ephemeral,
      is_snapshotable: flags.is_snapshotable,
      snapshots_allocated_size: 0,
      storage_type: row.storageType,
      allocated_size: row.allocatedSize === null ? null : Number(row.allocatedSize)
    },
    size: Number(row.size),
    snapshots: [],
    status: displayStatus(row.status, row.readers),
    storage_type: row.storageType as DriveWire['storage_type'],
    tags: row.tags.map(id => ref('tags', id)),
    uuid: row.id
  }
}

export const SHORT_FIELDS = ['owner', 'resource_uri', 'status', 'uuid'] as const

/** The short-list object of the dumps (§1.10): owner, resource_uri, status, uuid. */
export function driveToShortWire (row: Pick<DriveRow, 'id' | 'ownerId' | 'status' | 'readers'>): Pick<DriveWire, typeof SHORT_FIELDS[number]> {
  return { owner: ref('user', row.ownerId), resource_uri: uri('drives', row.id), status: displayStatus(row.status, row.readers), uuid: row.id }
}

/** Jobs (newest first) and servers of each drive, in one query each. */
export async function loadDriveExtras (db: Db, ids: string[]): Promise<Map<string, DriveExtras>> {
  const out = new Map<string, DriveExtras>(ids.map(id => [id, { jobIds: [], serverIds: [] }]))
  if (ids.length === 0) return out
  const [jobs, mounts] = await Promise.all([
    jobRefsFor(db, 'drives', ids),
    db.serverDrive.findMany({ where: { driveId: { in: ids } }, select: { driveId: true, serverId: true }, orderBy: [{ serverId: 'asc' }] })
  ])
  for (const [id, refs] of jobs) {
    const extras = out.get(id)
    if (extras) extras.jobIds = refs.map(r => r.uuid)
  }
  for (const m of mounts) {
    const list = out.get(m.driveId)?.serverIds
    if (list && !list.includes(m.serverId)) list.push(m.serverId)
  }
  return out
}

/** Sets a fresh runtime.allocated_size on the rows (features/drives/allocated.ts). */
export type MeasureAllocated = (rows: DriveRow[]) => Promise<void>

export async function drivesToWire (db: Db, rows: DriveRow[]): Promise<DriveWire[]> {
  const extras = await loadDriveExtras(db, rows.map(r => r.id))
  return rows.map(r => driveToWire(r, extras.get(r.id)))
}

/** The current wire object of an owned drive, or undefined when it does not exist (event frames). */
export async function loadDriveWire (db: Db, ownerId: string, id: string, measure?: MeasureAllocated): Promise<DriveWire | undefined> {
  const row = await db.drive.findFirst({ where: { id, ownerId, deleted: false } })
  if (!row) return undefined
  await measure?.([row])
  return (await drivesToWire(db, [row]))[0]
}

// ---------------------------------------------------------------------------------------------
// Checks shared with the clone, upload and server services

/** The caller's drive; another account's, a deleted or an unknown drive is 404 notexist. */
export async function loadOwnedDrive (db: Db, ownerId: string, id: string, opts: { lock?: boolean } = {}): Promise<DriveRow> {
  if (!isUuid(id)) throw errors.notFound('Drive', 'uuid')
  if (opts.lock) await lockDriveRows(db, [id])
  const row = await db.drive.findFirst({ where: { id: id.toLowerCase(), ownerId, deleted: false } })
  if (!row) throw errors.notFound(`Drive ${id}`, 'uuid')
  return row
}

/** SELECT ... FOR UPDATE on drive rows, in id order (no deadlocks between bulk operations). */
export async function lockDriveRows (db: Db, ids: string[]): Promise<void> {
  const sorted = [...new Set(ids.filter(isUuid).map(i => i.toLowerCase()))].sort()
  if (sorted.length === 0) return
  await db.$queryRaw`SELECT id FROM drives WHERE id = ANY(${sorted}::uuid[]) ORDER BY id FOR UPDATE`
}

/** Throws busy (503) or wrongState (400) when `op` may not start on the drive now. */
export function assertDriveUsable (drive: DriveRow, op: DriveOperation): void {
  if (drive.deleted) throw errors.notFound(`Drive ${drive.id}`, 'uuid')
  const status = displayStatus(drive.status, drive.readers)
  const verdict = canOperate(op, drive.status, drive.readers)
  if (verdict === 'wrong_state') throw errors.wrongState(`Cannot ${op} drive ${drive.id} while its status is ${status}`)
  if (verdict === 'busy' || (op !== 'edit' && drive.lockedByJob !== null)) {
    throw errors.busy(`Drive ${drive.id} is busy (${status}); try again when the running operation has finished`)
  }
}

export interface MountState {
  /** Number of servers the drive is attached to. */
  count: number
  /** Whether one of them is running (or starting/stopping). */
  active: boolean
}

export async function mountState (db: Db, driveId: string): Promise<MountState> {
  const mounts = await db.serverDrive.findMany({ where: { driveId }, select: { serverId: true, server: { select: { status: true } } } })
  return { count: new Set(mounts.map(m => m.serverId)).size, active: mounts.some(m => isServerActive(m.server.status)) }
}

/** restingStatusOf in SQL, for the drive whose id is the parameter `param` (e.g. `$1`). */
export function restingStatusSql (param: string): string {
  return `CASE WHEN EXISTS (SELECT 1 FROM server_drives m WHERE m.drive_id = ${param}::uuid) THEN 'mounted' ELSE 'unmounted' END`
}

/** mounted or unmounted, from the drive's server_drives rows. */
export async function restingStatusOf (db: Db, driveId: string): Promise<'mounted' | 'unmounted'> {
  return restingStatus(await db.serverDrive.count({ where: { driveId } }))
}

/** The one place drive changes are announced (events); call it inside the transaction that makes them. */
export async function announceDrives (db: Sql, ownerId: string, ids: string[], change: ChangeKind = 'changed'): Promise<void> {
  if (ids.length === 0) return
  await publishChange(db, ids.map(id => ({ ownerId, resourceType: 'drives' as const, resourceId: id, change })))
}

// ---------------------------------------------------------------------------------------------
// Input checks (before anything is written)

function checkSize (size: number, max: number): void {
  if (!Number.isSafeInteger(size) || size < 1) throw errors.validation('size must be a whole number of bytes, at least 1', 'size')
  if (size > max) throw errors.validation(`size must be at most ${max} bytes`, 'size')
}

function checkMeta (meta: Record<string, string>): void {
  const bad = badMetaKey(meta)
  if (bad !== undefined) throw errors.validation(`meta keys must be 1 to 32 characters long: ${JSON.stringify(bad.slice(0, 40))}`, 'meta')
  for (const [k, v] of Object.entries(meta)) {
    if (typeof v !== 'string') throw errors.validation(`meta values must be strings (key ${JSON.stringify(k)})`, 'meta')
  }
}

// ---------------------------------------------------------------------------------------------
// Create

/** A drive about to be created, with its drive_create job; every input checked first. */
export interface PlannedDrive extends CloneSource {
  id: string
  jobId: string
  iops: number | null
}

/** Checks every object before anything is written (a bulk create is all or nothing) and gives each its ids. */
export function planDriveCreates (driveMaxSize: number, inputs: DriveCreateInputT[]): PlannedDrive[] {
  const max = maxDriveSize(driveMaxSize)
  return inputs.map(input => {
    checkSize(input.size, max)
    if (input.meta) checkMeta(input.meta)
    return {
      id: randomUUID(),
      jobId: newJobId(),
      name: input.name,
      size: input.size,
      media: input.media,
      storageType: input.storage_type ?? DEFAULT_STORAGE_TYPE,
      allowMultimount: input.allow_multimount ?? false,
      affinities: input.affinities ?? [],
      meta: input.meta ?? {},
      tags: tagIds(input.tags ?? []),
      iops: input.iops ?? null
    }
  })
}

// ---------------------------------------------------------------------------------------------
// Update and resize

export interface UpdateOptions {
  /**
   * false (PUT, §2.6): fields a mounted-on-running drive cannot change are silently ignored.
   * true (?do=resize, §2.7): update or fail; a resize job always starts.
   */
  strict: boolean
}

export async function updateDrive (deps: DrivesDeps, ownerId: string, id: string, input: DriveUpdateInputT, opts: UpdateOptions): Promise<DriveWire> {
  checkUpdate(deps, input, opts)
  return deps.prisma.$transaction(tx => updateDriveIn(tx, ownerId, id, input, opts))
}

/** PUT /drives/ (bulk): every drive updated as by PUT /drives/{uuid}/, in one transaction, all or none. */
export async function updateDrives (deps: DrivesDeps, ownerId: string, items: Array<{ id: string, input: DriveUpdateInputT }>): Promise<DriveWire[]> {
  const seen = new Set<string>()
  for (const item of items) {
    if (seen.has(item.id)) throw errors.validation(`Drive ${item.id} is listed twice`, 'uuid')
    seen.add(item.id)
    naming('Drive', item.id, () => { checkUpdate(deps, item.input, { strict: false }) })
  }
  return deps.prisma.$transaction(async (tx) => {
    // every row locked up front in id order, then updated in request order: two requests listing
    // the same drives in opposite orders would otherwise each hold one and wait for the other
    await lockDriveRows(tx, items.map(i => i.id))
    const out: DriveWire[] = []
    for (const item of items) out.push(await naming('Drive', item.id, async () => updateDriveIn(tx, ownerId, item.id, item.input, { strict: false })))
    return out
  }, { timeout: 60_000 })
}

function checkUpdate (deps: DrivesDeps, input: DriveUpdateInputT, opts: UpdateOptions): void {
  if (input.size !== undefined) checkSize(input.size, maxDriveSize(deps.driveMaxSize))
  if (input.meta) checkMeta(input.meta)
  if (input.tags) tagIds(input.tags)
  if (opts.strict && input.size === undefined) throw errors.validation('size is required', 'size')
}

async function updateDriveIn (tx: Tx, ownerId: string, id: string, input: DriveUpdateInputT, opts: UpdateOptions): Promise<DriveWire> {
  const tags = input.tags ? tagIds(input.tags) : undefined
  const row = await loadOwnedDrive(tx, ownerId, id, { lock: true })
  if (input.storage_type !== undefined && input.storage_type !== row.storageType) {
    throw errors.validation('storage_type cannot be changed after the drive is created', 'storage_type')
  }
  const mounts = await mountState(tx, row.id)
  if (opts.strict && mounts.active) throw errors.wrongState(`Drive ${row.id} is mounted on a running server; stop the server to resize it`)
  const allowed = editableFields(mounts.active)
  const applies = (field: keyof DriveUpdateInputT) => input[field] !== undefined && allowed.includes(field)

  const data: Record<string, unknown> = {}
  if (applies('name')) data.name = input.name
  if (applies('media')) data.media = input.media
  if (applies('allow_multimount')) data.allowMultimount = input.allow_multimount
  if (applies('affinities')) data.affinities = input.affinities
  if (applies('iops')) data.iops = input.iops
  if (applies('meta')) data.meta = input.meta
  if (tags && allowed.includes('tags')) data.tags = tags

  const resize = opts.strict || (applies('size') && input.size !== Number(row.size))
  let jobId: string | undefined
  if (resize) {
    assertDriveUsable(row, 'resize')
    await lockResources(tx, [{ type: 'drives', id: row.id, mode: 'write' }])
    jobId = newJobId()
    data.status = 'resizing'
    data.lockedByJob = jobId
  }
  const updated = Object.keys(data).length > 0 ? await tx.drive.update({ where: { id: row.id }, data }) : row
  if (resize && jobId) {
    await enqueueJob(tx, {
      id: jobId,
      ownerId,
      operation: 'drive_resize',
      params: { driveId: row.id, size: input.size, fromSize: Number(row.size) },
      resources: [{ type: 'drives', id: row.id, mode: 'write' }],
      description: `resizing from ${row.size} to ${input.size} bytes`
    })
  }
  if (updated !== row) await announceDrives(tx, ownerId, [row.id])
  return (await drivesToWire(tx, [updated]))[0]
}

// ---------------------------------------------------------------------------------------------
// Delete

/**
 * Starts deleting drives, all or none: each must be the caller's, not busy, and not mounted on a
 * running server. Drives on stopped servers are detached. The rows disappear from every view at
 * once (deleted = true) and the drive_delete job removes the data and then the row. A drive held
 * only by its idle chunked upload (idleUploadOf) is not busy: that upload is cancelled, and its
 * job's cleanup removes the data and the row, as when the upload's job is cancelled.
 */
export async function deleteDrives (deps: DrivesDeps, ownerId: string, ids: string[]): Promise<void> {
  await deps.prisma.$transaction(tx => deleteDrivesIn(tx, ownerId, ids), { timeout: 60_000 })
}

/** deleteDrives inside the caller's transaction (a recursive server delete is one transaction). */
export async function deleteDrivesIn (tx: Tx, ownerId: string, ids: string[]): Promise<void> {
  const unique = [...new Set(ids.map(i => i.toLowerCase()))]
  await lockDriveRows(tx, unique.filter(isUuid))
  const uploads: string[] = []
  for (const id of unique) {
    const row = await loadOwnedDrive(tx, ownerId, id)
    const upload = await idleUploadOf(tx, row)
    if (upload !== undefined) {
      // never mounted (an uploading drive cannot be), read by no clone: hidden now, removed by its upload's cleanup
      await tx.drive.update({ where: { id: row.id }, data: { deleted: true } })
      uploads.push(upload)
      continue
    }
    assertDriveUsable(row, 'delete')
    await lockResources(tx, [{ type: 'drives', id: row.id, mode: 'write' }])
    const mounts = await mountState(tx, row.id)
    if (mounts.active) throw errors.wrongState(`Drive ${row.id} is mounted on a running server; stop the server or detach the drive first`)
    if (mounts.count > 0) {
      // the stopped servers it is detached from change too
      const servers = await tx.serverDrive.findMany({ where: { driveId: row.id }, select: { serverId: true }, distinct: ['serverId'] })
      await tx.serverDrive.deleteMany({ where: { driveId: row.id } })
      await publishChange(tx, servers.map(m => ({ ownerId, resourceType: 'servers' as const, resourceId: m.serverId })))
    }
    const jobId = newJobId()
    await tx.drive.update({ where: { id: row.id }, data: { deleted: true, lockedByJob: jobId } })
    await enqueueJob(tx, {
      id: jobId,
      ownerId,
      operation: 'drive_delete',
      params: { driveId: row.id },
      resources: [{ type: 'drives', id: row.id, mode: 'write' }],
      description: 'deleting the drive'
    })
  }
  // the cancels' NOTIFYs and job events go out at commit, with the drives' events
  await requestCancel(tx, uploads)
  await announceDrives(tx, ownerId, unique)
}

/**
 * The job of the chunked upload (§5.2, resumable.js) holding `row`, when that upload is idle: its
 * job parked waiting for chunks (started, no lease: no worker or request is finishing or failing
 * it; no cancel asked) and no chunk of it being received by any process (none of its chunk claims
 * held). The caller holds the drive row's lock (FOR UPDATE) from before it looks at the claims: a
 * chunk claimed after the look waits for that lock before it writes a byte (upload-chunked.ts
 * CHUNK_NOW_SQL, upload-resumable.ts LOCATE_SQL), and then finds the upload over. The job row is locked too, so no worker takes
 * the job (its deadline, its last chunk) before the caller commits. Undefined otherwise: the drive
 * is busy. A chunk being written is a busy error of its own (503, retry).
 */
async function idleUploadOf (tx: Tx, row: DriveRow): Promise<string | undefined> {
  if (row.status !== 'uploading' || row.lockedByJob === null) return undefined
  const [job] = await query<{ id: string, receiving: boolean }>(tx, IDLE_UPLOAD_SQL, [row.lockedByJob, chunkClaimGroup(row.ownerId, row.id)])
  if (job?.receiving === true) throw errors.busy(`Drive ${row.id} is receiving a chunk of its upload; try again once the chunk is stored`)
  return job?.id
}
// $1 the job holding the drive, $2 the claim group of the drive's chunks
const IDLE_UPLOAD_SQL = `
  SELECT id::text, ${groupHeldSql('$2')} AS receiving FROM jobs
  WHERE id = $1::uuid AND operation = 'drive_upload' AND params ->> 'mode' = 'chunked'
    AND state = 'started' AND locked_by IS NULL AND NOT cancel_requested
  FOR UPDATE`

// ---------------------------------------------------------------------------------------------
// List

function statusWhere (value: string): Record<string, unknown> {
  if (value === 'cloning_src') return { status: { in: [...RESTING_STATUSES] }, readers: { gt: 0 } }
  if ((RESTING_STATUSES as readonly string[]).includes(value)) return { status: value, readers: 0 }
  return { status: value }
}

export const driveFilters: FilterSpec = {
  name: { column: 'name', kind: 'string' },
  uuid: { column: 'id', kind: 'uuid' },
  tag: { column: 'tags', kind: 'uuid', build: (v) => ({ tags: { has: v.toLowerCase() } }) },
  status: { column: 'status', kind: 'string', choices: DRIVE_STATUSES, build: (v) => statusWhere(v) },
  media: { column: 'media', kind: 'string', choices: MEDIA },
  storage_type: { column: 'storageType', kind: 'string', choices: STORAGE_TYPES }
}

export const driveOrder: OrderSpec = {
  fields: { name: 'name', uuid: 'id', size: 'size', status: 'status', media: 'media', storage_type: 'storageType' },
  default: 'name'
}

export async function listDrives (db: Db, ownerId: string, query: Record<string, unknown>, detail: boolean, measure?: MeasureAllocated): Promise<ListEnvelope<Partial<DriveWire>>> {
  const plan = planList(query, driveFilters, driveOrder, DRIVE_FIELDS)
  const where = { ...plan.where, ownerId, deleted: false }
  const [total, rows] = await Promise.all([
    db.drive.count({ where }),
    db.drive.findMany({ where, orderBy: plan.orderBy, skip: plan.offset, take: plan.take })
  ])
  // fields= may ask the short list for any field; then the full object is built
  const full = detail || (plan.fields?.some(f => !(SHORT_FIELDS as readonly string[]).includes(f)) ?? false)
  if (full) await measure?.(rows)
  const objects: Array<Partial<DriveWire>> = full ? await drivesToWire(db, rows) : rows.map(driveToShortWire)
  return envelope(plan, total, objects)
}

// ---------------------------------------------------------------------------------------------
// Availability groups (§2.3, §2.11)

/** The one storage host of a 'one-host' deployment, as a group key. */
const THIS_HOST = 'this deployment'

/**
 * The account's drives grouped by storage host: with local files all of them are on the one host
 * (one group); on Ceph no host holds a drive alone (each drive is a group of its own).
 */
export async function driveAvailabilityGroups (db: Db, ownerId: string, placement: DrivePlacement): Promise<string[][]> {
  const rows = await db.drive.findMany({ where: { ownerId, deleted: false }, select: { id: true }, orderBy: { id: 'asc' } })
  return availabilityGroups(rows.map(r => ({ id: r.id, host: placement === 'one-host' ? THIS_HOST : null })))
}

/** The drives sharing a storage host with the caller's drive `id`, itself included; 404 when it is not theirs. */
export async function driveAvailabilityGroup (db: Db, ownerId: string, id: string, placement: DrivePlacement): Promise<string[]> {
  const row = await loadOwnedDrive(db, ownerId, id)
  if (placement === 'spread') return [row.id]
  // deleted in between: still the drive asked about
  const group = groupOf(await driveAvailabilityGroups(db, ownerId, placement), row.id)
  return group.length > 0 ? group : [row.id]
}
