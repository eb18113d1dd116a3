// Clone planning (spec §2.9–2.11, §3.5) as pure functions: the definition of a drive clone and of
// a server clone (names, sizes, mounts, NICs), the held-back children of a server clone, and the
// progress line of a copy (`avoid` is parsed by avoid.ts). No Fastify, no Prisma.
import { cloneName } from './naming.ts'
import { formatBytes } from './progress.ts'

/** Why a plan was refused: a 400 validation error at `point`. */
export class ClonePlanError extends Error {
  constructor (message: string, readonly point: string) {
    super(message)
    this.name = 'ClonePlanError'
  }
}

// ---------------------------------------------------------------------------------------------
// Drive clone

export interface CloneSource {
  name: string
  size: number
  media: string
  storageType: string
  allowMultimount: boolean
  affinities: string[]
  meta: Record<string, string>
  tags: string[]
}

export interface DriveCloneRequest {
  name?: string
  media?: string
  affinities?: string[]
  size?: number
  storage_type?: string
  allow_multimount?: boolean
  meta?: Record<string, string>
  /** Tag ids, already resolved from the related-field forms. */
  tags?: string[]
}

export type DriveCloneDefinition = CloneSource

/** Storage types whose drives cannot be cloned (ephemeral, §2.9). */
export const UNCLONABLE_STORAGE = ['local_nvme'] as const

/**
 * The new drive's definition: the request's fields over the source's, the name from the naming
 * strategy when none is given, a size at least the source's (§2.9 "Magnesium"), meta and tags
 * copied unless given.
 */
export function planDriveClone (source: CloneSource, req: DriveCloneRequest, strategy: string, now: Date = new Date(), maxSize = Number.MAX_SAFE_INTEGER): DriveCloneDefinition {
  if ((UNCLONABLE_STORAGE as readonly string[]).includes(source.storageType)) {
    throw new ClonePlanError(`${source.storageType} drives are ephemeral and cannot be cloned`, 'storage_type')
  }
  if (req.storage_type !== undefined && (UNCLONABLE_STORAGE as readonly string[]).includes(req.storage_type)) {
    throw new ClonePlanError(`cannot clone onto ${req.storage_type}: ephemeral drives are not clone targets`, 'storage_type')
  }
  const size = req.size ?? source.size
  if (!Number.isSafeInteger(size) || size < source.size) {
    throw new ClonePlanError(`size must be at least the source drive's size (${source.size} bytes), got ${String(req.size)}`, 'size')
  }
  if (size > maxSize) throw new ClonePlanError(`size must be at most ${maxSize} bytes`, 'size')
  return {
    name: req.name ?? cloneName(source.name, strategy, now),
    size,
    media: req.media ?? source.media,
    storageType: req.storage_type ?? source.storageType,
    allowMultimount: req.allow_multimount ?? source.allowMultimount,
    affinities: req.affinities ?? [...source.affinities],
    meta: req.meta ?? { ...source.meta },
    tags: req.tags ?? [...source.tags]
  }
}

// ---------------------------------------------------------------------------------------------
// Server clone

export interface IpConfLike { conf: string, ip: string | null }

export interface NicLike {
  mac: string
  ip_v4_conf: IpConfLike | null
  ip_v6_conf: IpConfLike | null
  [key: string]: unknown
}

export interface SourceMount {
  driveId: string
  device: string
  devChannel: string
  bootOrder: number | null
  media: string
  driveName: string
}

export interface ServerCloneRequest {
  name?: string
  random_vnc_password?: boolean
}

export interface PlannedMount {
  device: string
  devChannel: string
  bootOrder: number | null
  /** The drive mounted on the new server: the source cdrom itself, or (disks) undefined until created. */
  sharedDriveId?: string
  /** For disks: the source drive to clone and the clone's name. */
  clone?: { sourceId: string, name: string }
}

export interface ServerClonePlan {
  name: string
  vncPassword: string
  nics: NicLike[]
  mounts: PlannedMount[]
}

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'

/** 8 alphanumerics (§3.5 example "QR5coR4V") from random bytes (rejection-sampled, unbiased). */
export function vncPasswordFrom (bytes: Uint8Array, length = 8): string {
  let out = ''
  for (const b of bytes) {
    if (out.length === length) break
    if (b < 248) out += ALNUM[b % 62] // 248 = 4 * 62: no modulo bias
  }
  if (out.length < length) throw new RangeError('not enough random bytes for a password')
  return out
}

/** A NIC of the clone: a new MAC, and every IP configuration turned into DHCP (§3.5). */
export function cloneNic<T extends NicLike> (nic: T, newMac: string): T {
  const dhcp = (c: IpConfLike | null): IpConfLike | null => c === null ? null : c.conf === 'static' || c.ip !== null ? { conf: 'dhcp', ip: null } : { ...c }
  return { ...nic, mac: newMac, ip_v4_conf: dhcp(nic.ip_v4_conf), ip_v6_conf: dhcp(nic.ip_v6_conf) }
}

/**
 * The new server: every disk cloned to the same device/dev_channel/boot_order with a name from
 * the strategy, cdroms shared unchanged, NICs with new MACs and DHCP, the VNC password copied or
 * fresh.
 */
export function planServerClone (
  source: { name: string, vncPassword: string, nics: NicLike[] },
  mounts: SourceMount[],
  req: ServerCloneRequest,
  strategy: string,
  deps: { now?: Date, newMac: () => string, randomPassword: () => string }
): ServerClonePlan {
  const now = deps.now ?? new Date()
  return {
    name: req.name ?? cloneName(source.name, strategy, now),
    vncPassword: req.random_vnc_password === true ? deps.randomPassword() : source.vncPassword,
    nics: source.nics.map(n => cloneNic(n, deps.newMac())),
    mounts: mounts.map(m => ({
      device: m.device,
      devChannel: m.devChannel,
      bootOrder: m.bootOrder,
      ...(m.media === 'disk'
        ? { clone: { sourceId: m.driveId, name: cloneName(m.driveName, strategy, now) } }
        : { sharedDriveId: m.driveId })
    }))
  }
}

// ---------------------------------------------------------------------------------------------
// Children of a server clone and copy progress

/**
 * run_at of children that wait for a free slot: far in the future, so the queue leaves them
 * alone until a finishing sibling releases one (or a cancel claims them for cleanup).
 */
export const HELD_RUN_AT = new Date('2999-01-01T00:00:00Z')

/** Which of `count` children start at once with `parallelism` slots: the first ones. */
export function startsAtOnce (index: number, parallelism: number): boolean {
  return index < Math.max(1, parallelism)
}

/** "copied 1.2 of 10.0 GiB" */
export function copyDescription (bytesDone: number, bytesTotal: number): string {
  // a drive that holds no data yet: "copied 0 B of 0 B" would say nothing
  if (bytesTotal <= 0) return 'copying an empty drive'
  return `copied ${formatBytes(bytesDone)} of ${formatBytes(bytesTotal)}`
}

/** What a finished copy did, for its job's description: "copied 1.2 GiB in 4.2 s". */
export function copiedDescription (bytes: number, size: number, seconds: number, verb = 'copied'): string {
  const took = `in ${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`
  if (bytes <= 0) return `${verb === 'copied' ? 'cloned' : verb} an empty ${formatBytes(size)} drive ${took}`
  return `${verb} ${formatBytes(bytes)}${size > bytes ? ` (of a ${formatBytes(size)} drive)` : ''} ${took}`
}
