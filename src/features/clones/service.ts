// Cloning (spec §2.9–2.11, §3.5): POST /drives/{uuid}/action/?do=clone and
// POST /servers/{uuid}/action/?do=clone. Each request writes, in one transaction, the new rows
// (destination drives in cloning_dst, the new server), one more reader on every source drive, and
// the jobs: one drive_clone, or a server_clone parent with one drive_clone child per disk, of
// which at most config.cloneParallelism run at once (the others are held back until a sibling
// finishes). The plugin registers the two actions; cloneHandlers gives app.ts its job handlers
// (drive_clone, drive_flatten on copy-on-write storage, server_clone).
import { randomBytes, randomUUID } from 'node:crypto'
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import type { PrismaClient, Tx } from '../../db/client.ts'
import {
  ClonePlanError, HELD_RUN_AT, planDriveClone, planServerClone, startsAtOnce, vncPasswordFrom,
  type NicLike, type SourceMount
} from '../../domain/clone-plan.ts'
import { badMetaKey } from '../../domain/drive-status.ts'
import { relatedUuid, tagIds } from '../../http/bodies.ts'
import { domainErrors as errors } from '../../domain/errors.ts'
import { enqueueJob, enqueueJobs, type JobResourceInput, newJobId } from '../../engine/enqueue.ts'
import { driveCloneHandler } from './handlers/drive-clone.ts'
import { driveFlattenHandler } from './handlers/drive-flatten.ts'
import { serverCloneHandler } from './handlers/server-clone.ts'
import { lockResources } from '../../engine/resources.ts'
import { DriveCloneInput, ServerCloneInput, driveCloneBody, serverCloneBody, type DriveCloneInputT, type ServerCloneInputT } from './schemas.ts'
import { DriveObjects, type DriveWire } from '../drives/schemas.ts'
import { Server, type ServerWire } from '../servers/schemas.ts'
import { refTo } from '../../http/schemas.ts'
import type { DriveStorage } from '../../storage/index.ts'
import type { Action } from '../../http/actions.ts'
import type { HandlerSet } from '../../engine/types.ts'
import {
  announceDrives, assertDriveUsable, driveToWire, loadOwnedDrive, lockDriveRows, maxDriveSize, type DriveRow
} from '../drives/service.ts'
import { publishChange } from '../../engine/events.ts'
import { replaceMounts } from '../servers/mounts.ts'
import { generateMac, lockOwnedServer, serversToWire, type StoredNic } from '../servers/service.ts'
import { parseAvoid } from '../../domain/avoid.ts'

export interface ClonesDeps {
  prisma: PrismaClient
  storage: DriveStorage
  driveMaxSize: number
  cloneParallelism: number
}

export interface Cloner {
  /** The caller's account id and its clone_naming strategy. */
  id: string
  cloneNaming: string
}

/** Turns a refused plan into the 400 the client sees. */
function planned<T> (fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    if (err instanceof ClonePlanError) throw errors.validation(err.message, err.point)
    throw err
  }
}

/** Bytes the copy of a drive will move (its allocated blocks), for the job's bytes_total; 0 when unknown. */
async function dataBytes (storage: DriveStorage, id: string): Promise<number> {
  try {
    return (await storage.stat(id)).allocated
  } catch {
    return 0
  }
}

function sourceOf (row: DriveRow) {
  return {
    name: row.name,
    size: Number(row.size),
    media: row.media,
    storageType: row.storageType,
    allowMultimount: row.allowMultimount,
    affinities: row.affinities,
    meta: (row.meta ?? {}) as Record<string, string>,
    tags: row.tags
  }
}

/** A clone source must be readable now: mounted or unmounted, possibly already being cloned. */
function assertClonable (row: DriveRow): void {
  assertDriveUsable(row, 'clone')
}

interface DestinationInput {
  id: string
  jobId: string
  ownerId: string
  def: ReturnType<typeof planDriveClone>
}

async function createDestination (tx: Tx, d: DestinationInput): Promise<void> {
  await tx.drive.create({
    data: {
      id: d.id,
      ownerId: d.ownerId,
      name: d.def.name,
      size: BigInt(d.def.size),
      media: d.def.media,
      status: 'cloning_dst',
      storageType: d.def.storageType,
      allowMultimount: d.def.allowMultimount,
      affinities: d.def.affinities,
      meta: d.def.meta,
      tags: d.def.tags,
      lockedByJob: d.jobId
    }
  })
}

/** One more clone job reads the source: it shows cloning_src, and resize/delete answer 503. */
async function addReader (tx: Tx, sourceId: string): Promise<void> {
  await tx.drive.update({ where: { id: sourceId }, data: { readers: { increment: 1 } } })
}

function cloneResources (sourceId: string, driveId: string): JobResourceInput[] {
  return [{ type: 'drives', id: sourceId, mode: 'read' }, { type: 'drives', id: driveId, mode: 'write' }]
}

// ---------------------------------------------------------------------------------------------
// Drive clone

export async function cloneDrive (deps: ClonesDeps, account: Cloner, sourceId: string, input: DriveCloneInputT, avoid: unknown): Promise<DriveWire> {
  parseAvoid(avoid)
  if (input.meta) {
    const bad = badMetaKey(input.meta)
    if (bad !== undefined) throw errors.validation(`meta keys must be 1 to 32 characters long: ${JSON.stringify(bad.slice(0, 40))}`, 'meta')
  }
  const tags = input.tags ? tagIds(input.tags) : undefined
  const ownerId = account.id
  const id = randomUUID()
  const jobId = newJobId()
  const bytesTotal = await dataBytes(deps.storage, sourceId.toLowerCase())
  const row = await deps.prisma.$transaction(async (tx) => {
    const source = await loadOwnedDrive(tx, ownerId, sourceId, { lock: true })
    assertClonable(source)
    const def = planned(() => planDriveClone(sourceOf(source), { ...input, tags }, account.cloneNaming, new Date(), maxDriveSize(deps.driveMaxSize)))
    const resources = cloneResources(source.id, id)
    await lockResources(tx, resources)
    await createDestination(tx, { id, jobId, ownerId, def })
    await addReader(tx, source.id)
    await enqueueJob(tx, {
      id: jobId,
      ownerId,
      operation: 'drive_clone',
      params: { sourceId: source.id, driveId: id, size: def.size },
      resources,
      ...(bytesTotal > 0 ? { bytesTotal } : {}),
      description: `cloning drive ${source.id}`
    })
    await announceDrives(tx, ownerId, [id], 'added')
    await announceDrives(tx, ownerId, [source.id])
    return tx.drive.findUniqueOrThrow({ where: { id } })
  }, { timeout: 60_000 })
  return driveToWire(row, { jobIds: [jobId], serverIds: [] })
}

// ---------------------------------------------------------------------------------------------
// Server clone

interface DiskClone { sourceId: string, driveId: string, jobId: string, def: ReturnType<typeof planDriveClone>, bytes: number }

export async function cloneServer (deps: ClonesDeps, account: Cloner, sourceServerId: string, input: ServerCloneInputT, avoid: unknown): Promise<ServerWire> {
  parseAvoid(avoid)
  const ownerId = account.id
  const serverId = randomUUID()
  const parentId = newJobId()
  // allocated bytes of each disk, read before the transaction (a stat per disk, no lock needed)
  const preMounts = relatedUuid(sourceServerId)
    ? await deps.prisma.serverDrive.findMany({ where: { serverId: sourceServerId.toLowerCase(), drive: { media: 'disk' } }, select: { driveId: true } })
    : []
  const bytes = new Map<string, number>()
  for (const m of preMounts) bytes.set(m.driveId, await dataBytes(deps.storage, m.driveId))

  const row = await deps.prisma.$transaction(async (tx) => {
    const source = await lockOwnedServer(tx, ownerId, sourceServerId)
    const mountRows = await tx.serverDrive.findMany({ where: { serverId: source.id }, orderBy: { position: 'asc' } })
    await lockDriveRows(tx, mountRows.map(m => m.driveId))
    const drives = new Map((await tx.drive.findMany({ where: { id: { in: mountRows.map(m => m.driveId) } } })).map(d => [d.id, d]))
    const mounts: SourceMount[] = mountRows.map(m => {
      const d = drives.get(m.driveId)!
      return { driveId: m.driveId, device: m.device, devChannel: m.devChannel, bootOrder: m.bootOrder, media: d.media, driveName: d.name }
    })
    const taken = new Set<string>()
    const plan = planned(() => planServerClone(
      { name: source.name, vncPassword: source.vncPassword, nics: (source.nics ?? []) as unknown as NicLike[] },
      mounts,
      input,
      account.cloneNaming,
      { newMac: () => { const mac = generateMac(taken); taken.add(mac); return mac }, randomPassword: () => vncPasswordFrom(randomBytes(32)) }
    ))

    // destinations, checked before anything is written
    const disks: DiskClone[] = []
    for (const m of plan.mounts) {
      if (!m.clone) continue
      const src = drives.get(m.clone.sourceId)!
      assertClonable(src)
      const def = planned(() => planDriveClone(sourceOf(src), { name: m.clone!.name }, account.cloneNaming))
      disks.push({ sourceId: src.id, driveId: randomUUID(), jobId: newJobId(), def, bytes: bytes.get(src.id) ?? 0 })
    }
    // only the source drives are held (cloning_src); the source server stays editable and deletable (CloudSigma)
    const parentResources: JobResourceInput[] = [{ type: 'servers', id: serverId, mode: 'write' }]
    await lockResources(tx, [...parentResources, ...disks.flatMap(d => cloneResources(d.sourceId, d.driveId))])

    await tx.server.create({
      data: {
        id: serverId,
        ownerId,
        name: plan.name,
        cpu: source.cpu,
        mem: source.mem,
        smp: source.smp,
        vncPassword: plan.vncPassword,
        status: 'stopped',
        meta: source.meta ?? {},
        tags: source.tags,
        nics: plan.nics as unknown as StoredNic[] as unknown as object,
        extra: source.extra ?? {},
        lockedByJob: parentId
      }
    })
    for (const d of disks) {
      await createDestination(tx, { id: d.driveId, jobId: d.jobId, ownerId, def: d.def })
      await addReader(tx, d.sourceId)
    }
    // cdroms are shared; the new disks stay cloning_dst (syncMountStatus leaves held drives alone)
    let next = 0
    await replaceMounts(tx, ownerId, serverId, plan.mounts.map(m => ({
      driveId: m.clone ? disks[next++].driveId : m.sharedDriveId!,
      device: m.device,
      devChannel: m.devChannel,
      bootOrder: m.bootOrder
    })))

    // the parent and its children in one statement (the engine's bulk path)
    await enqueueJobs(tx, [{
      id: parentId,
      ownerId,
      operation: 'server_clone',
      params: { sourceServerId: source.id, serverId, disks: disks.map(d => ({ sourceId: d.sourceId, driveId: d.driveId, jobId: d.jobId })) },
      resources: parentResources,
      description: `cloning server ${source.id} (${disks.length} disk${disks.length === 1 ? '' : 's'})`
    }, ...disks.map((d, index) => ({
      id: d.jobId,
      ownerId,
      operation: 'drive_clone' as const,
      parentId,
      rootId: parentId,
      params: { sourceId: d.sourceId, driveId: d.driveId, size: d.def.size, index },
      resources: cloneResources(d.sourceId, d.driveId),
      ...(d.bytes > 0 ? { bytesTotal: d.bytes } : {}),
      description: `cloning drive ${d.sourceId}`,
      ...(startsAtOnce(index, deps.cloneParallelism) ? {} : { runAt: HELD_RUN_AT })
    }))])
    await publishChange(tx, { ownerId, resourceType: 'servers', resourceId: serverId, change: 'added' })
    await announceDrives(tx, ownerId, disks.map(d => d.driveId), 'added')
    await announceDrives(tx, ownerId, [...new Set(disks.map(d => d.sourceId))])
    return tx.server.findUniqueOrThrow({ where: { id: serverId } })
  }, { timeout: 60_000 })
  return (await serversToWire(deps.prisma, [row]))[0]
}

// ---------------------------------------------------------------------------------------------
// Actions and handlers

function depsOf (app: { prisma: PrismaClient, storage: DriveStorage, config: { driveMaxSize: number, cloneParallelism: number } }): ClonesDeps {
  return { prisma: app.prisma, storage: app.storage, driveMaxSize: app.config.driveMaxSize, cloneParallelism: app.config.cloneParallelism }
}

const driveClone: Action = {
  summary: 'Clone the drive (§2.9): 202 {"objects": [new drive]} in cloning_dst; a drive_clone job copies the data. Optional body: name, media, affinities, size (≥ source), storage_type, meta, tags. ?avoid=uuid,... is validated and advisory.',
  body: driveCloneBody,
  documentedBody: DriveCloneInput,
  result: refTo(DriveObjects),
  run: async ({ app, request, ownerId, uuid, body, query }) => {
    const drive = await cloneDrive(depsOf(app), { id: ownerId, cloneNaming: request.account.cloneNaming }, uuid, (body ?? {}) as DriveCloneInputT, query.avoid)
    return { objects: [drive] }
  }
}

const serverClone: Action = {
  summary: 'Clone the server (§3.5): 202 with the new, stopped server; disks are cloned by drive_clone children of one server_clone job, cdroms shared. Optional body: name, random_vnc_password.',
  body: serverCloneBody,
  documentedBody: ServerCloneInput,
  result: refTo(Server),
  run: async ({ app, request, ownerId, uuid, body, query }) =>
    cloneServer(depsOf(app), { id: ownerId, cloneNaming: request.account.cloneNaming }, uuid, (body ?? {}) as ServerCloneInputT, query.avoid)
}

/** The clone job handlers, for the engine (registered by app.ts). */
export function cloneHandlers (app: FastifyInstance): HandlerSet {
  // read at call time, so a test or bench that swaps app.storage is honoured
  const storage = () => app.storage
  return { drive_clone: driveCloneHandler(storage), drive_flatten: driveFlattenHandler(storage), server_clone: serverCloneHandler(storage) }
}

/** The clones feature: ?do=clone on drives and on servers. */
const clones: FastifyPluginAsync = async (app) => {
  app.actions.drive.register('clone', driveClone)
  app.actions.server.register('clone', serverClone)
}

export default clones
