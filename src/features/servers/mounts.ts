// Drive mounts on servers (spec §3.1, §2.12): checking a `drives` list, writing it, and keeping
// the drives' mounted/unmounted status in step with their mounts. syncMountStatus is the one
// place that moves a drive between `mounted` and `unmounted`; the drives and clone code call it too.
import type { Tx } from '../../db/client.ts'
import { canOperate, restingStatus, RESTING_STATUSES } from '../../domain/drive-status.ts'
import { requireRelatedUuid } from '../../http/bodies.ts'
import { domainErrors as errors } from '../../domain/errors.ts'
import { publishChange } from '../../engine/events.ts'
import type { MountInputT } from './schemas.ts'

/** Controllers and units per device type ([doc:servers_kvm]; scsi is our choice). */
export const CHANNEL_LIMITS: Record<string, { controllers: number, units: number }> = {
  ide: { controllers: 2, units: 2 },
  virtio: { controllers: 171, units: 6 },
  scsi: { controllers: 4, units: 7 }
}

/** Why `device`/`devChannel` is not a valid slot, or undefined when it is. */
export function devChannelProblem (device: string, devChannel: string): string | undefined {
  const limits = Object.hasOwn(CHANNEL_LIMITS, device) ? CHANNEL_LIMITS[device] : undefined
  if (!limits) return `device must be one of ${Object.keys(CHANNEL_LIMITS).join(', ')}`
  const m = /^(\d+):(\d+)$/.exec(devChannel)
  if (!m) return `dev_channel ${JSON.stringify(devChannel)} must be controller:unit, e.g. 0:0`
  const [controller, unit] = [Number(m[1]), Number(m[2])]
  if (controller >= limits.controllers || unit >= limits.units) {
    return `dev_channel ${devChannel} is out of range for ${device} (controller 0-${limits.controllers - 1}, unit 0-${limits.units - 1})`
  }
  return undefined
}

/**
 * A valid dev_channel (see devChannelProblem) in its one written form, controller and unit as
 * plain decimals: `00:01` is `0:1`. Stored and compared so, one slot cannot hold two drives.
 */
export const canonicalChannel = (devChannel: string): string => devChannel.split(':').map(Number).join(':')

export interface Mount {
  driveId: string
  device: string
  devChannel: string
  bootOrder: number | null
}

/** Parses a `drives` list and checks what needs no database: drive refs, slots, duplicate slots (dev_channel canonical). */
export function parseMounts (inputs: MountInputT[]): Mount[] {
  const slots = new Set<string>()
  return inputs.map(input => {
    const driveId = requireRelatedUuid(input.drive, 'drives', 'drives')
    const problem = devChannelProblem(input.device, input.dev_channel)
    if (problem) throw errors.validation(problem, 'drives')
    const devChannel = canonicalChannel(input.dev_channel)
    const slot = `${input.device} ${devChannel}`
    if (slots.has(slot)) throw errors.validation(`Two drives use ${input.device} dev_channel ${devChannel}`, 'drives')
    slots.add(slot)
    return { driveId, device: input.device, devChannel, bootOrder: input.boot_order ?? null }
  })
}

/** Row locks on drives, in id order so that concurrent callers cannot deadlock. */
async function lockDrives (tx: Tx, ids: string[]): Promise<void> {
  if (ids.length === 0) return
  const sorted = [...new Set(ids)].sort()
  await tx.$queryRaw`SELECT id FROM drives WHERE id = ANY(${sorted}::uuid[]) ORDER BY id FOR UPDATE`
}

/**
 * Checks the drives of a `drives` list that `serverId` does not mount yet, inside the transaction
 * that will write the mounts: they must be the account's, ready, and (disks) not mounted
 * elsewhere unless allow_multimount. Drives already mounted on the server are kept as they are.
 */
export async function checkMountable (tx: Tx, ownerId: string, serverId: string, mounts: Mount[]): Promise<void> {
  const ids = [...new Set(mounts.map(m => m.driveId))]
  await lockDrives(tx, ids)
  const drives = await tx.drive.findMany({
    where: { id: { in: ids }, ownerId, deleted: false },
    select: { id: true, media: true, status: true, readers: true, allowMultimount: true, lockedByJob: true, mounts: { select: { serverId: true } } }
  })
  const byId = new Map(drives.map(d => [d.id, d]))
  const seen = new Set<string>()
  for (const m of mounts) {
    const d = byId.get(m.driveId)
    // another account's drive gets the same answer as a missing one
    if (!d) throw errors.validation(`Drive ${m.driveId} does not exist`, 'drives')
    if (seen.has(d.id) && d.media === 'disk') throw errors.validation(`Disk ${d.id} is listed twice`, 'drives')
    seen.add(d.id)
    if (d.mounts.some(x => x.serverId === serverId)) continue
    if (canOperate('mount', d.status, d.readers) !== 'ok') {
      throw errors.validation(`Drive ${d.id} is ${d.status} and cannot be mounted until it is ready`, 'drives')
    }
    if (d.lockedByJob) throw errors.busy(`Drive ${d.id} is busy with another operation`, 'drives')
    if (d.media === 'disk' && !d.allowMultimount && d.mounts.some(x => x.serverId !== serverId)) {
      throw errors.validation(`Disk ${d.id} is mounted on another server; set allow_multimount to share it`, 'drives')
    }
  }
}

/**
 * Moves each drive to `mounted` when it has mounts and to `unmounted` when it has none. Drives in
 * any other status (a job holds them) are left alone: the job settles them with restingStatus.
 * Returns the ids whose status changed.
 */
export async function syncMountStatus (tx: Tx, driveIds: string[]): Promise<string[]> {
  const ids = [...new Set(driveIds)]
  if (ids.length === 0) return []
  const drives = await tx.drive.findMany({
    where: { id: { in: ids }, deleted: false, status: { in: [...RESTING_STATUSES] } },
    select: { id: true, status: true, _count: { select: { mounts: true } } }
  })
  const changed: Record<'mounted' | 'unmounted', string[]> = { mounted: [], unmounted: [] }
  for (const d of drives) {
    const next = restingStatus(d._count.mounts)
    if (d.status !== next) changed[next].push(d.id)
  }
  for (const status of ['mounted', 'unmounted'] as const) {
    if (changed[status].length > 0) {
      await tx.drive.updateMany({ where: { id: { in: changed[status] }, status: { in: [...RESTING_STATUSES] } }, data: { status } })
    }
  }
  return [...changed.mounted, ...changed.unmounted]
}

/**
 * Replaces the mounts of `serverId` with `mounts` (already checked), settles the status of every
 * drive attached or detached, and announces the drives whose mounted_on changed.
 */
export async function replaceMounts (tx: Tx, ownerId: string, serverId: string, mounts: Mount[]): Promise<void> {
  const before = await tx.serverDrive.findMany({ where: { serverId }, select: { driveId: true } })
  await tx.serverDrive.deleteMany({ where: { serverId } })
  if (mounts.length > 0) {
    await tx.serverDrive.createMany({
      data: mounts.map((m, position) => ({ serverId, driveId: m.driveId, device: m.device, devChannel: m.devChannel, bootOrder: m.bootOrder, position }))
    })
  }
  const old = new Set(before.map(b => b.driveId))
  const now = new Set(mounts.map(m => m.driveId))
  const touched = [...old, ...now].filter(id => old.has(id) !== now.has(id))
  await syncMountStatus(tx, touched)
  await publishChange(tx, touched.map(id => ({ ownerId, resourceType: 'drives' as const, resourceId: id })))
}

/** Detaches every drive of `serverId` (before it is deleted); returns the ids that were attached. */
export async function detachAll (tx: Tx, ownerId: string, serverId: string): Promise<string[]> {
  const before = await tx.serverDrive.findMany({ where: { serverId }, select: { driveId: true } })
  const ids = [...new Set(before.map(b => b.driveId))]
  await lockDrives(tx, ids)
  await replaceMounts(tx, ownerId, serverId, [])
  return ids
}
