// Servers (spec §3): create, update, delete, list and power actions, the wire form of a server
// row, and the service plugin that owns the hypervisor driver and the server_* job handlers.
import { randomBytes, randomUUID } from 'node:crypto'
import { isIP } from 'node:net'
import fp from 'fastify-plugin'
import type { PrismaClient, Tx } from '../../db/client.ts'
import type { Server as ServerRow } from '../../db/generated/client.ts'
import { ACTIVE_SERVER_STATUSES, badMetaKey, canOperate, displayStatus, isServerActive } from '../../domain/drive-status.ts'
import { availabilityGroups, groupOf } from '../../domain/availability.ts'
import type { FilterSpec, OrderSpec } from '../../domain/filters.ts'
import {
  SERVER_STATUSES, acceptsFullUpdate, activeSinceTime, canDeleteServer, planPowerAction, type PowerAction
} from '../../domain/server-status.ts'
import { isUuid, relatedUuid, tagIds } from '../../http/bodies.ts'
import { busyWith, domainErrors as errors, naming } from '../../domain/errors.ts'
import { envelope, planList, type ListEnvelope } from '../../http/listing.ts'
import { ref, uri, type Ref } from '../../http/uris.ts'
import type { HypervisorDriver } from '../../hypervisor/driver.ts'
import { RecordingDriver } from '../../hypervisor/recording.ts'
import { enqueueJob, newJobId } from '../../engine/enqueue.ts'
import { findConflicts } from '../../engine/resources.ts'
import {
  SERVER_FIELDS, type MountInputT, type MountWire, type NicInputT, type NicWire, type ServerCreateInputT, type ServerUpdateInputT, type ServerWire
} from './schemas.ts'
import { deleteDrivesIn } from '../drives/service.ts'
import { publishChange, type ChangeKind } from '../../engine/events.ts'
import { jobRefsFor } from '../jobs/view.ts'
import { checkMountable, detachAll, parseMounts, replaceMounts, type Mount } from './mounts.ts'

type Db = PrismaClient | Tx

// ---------------------------------------------------------------------------------------------
// Stored forms of the JSON columns

/** A NIC as stored in servers.nics: references are kept as ids (an IP address for ips). */
export interface StoredNic {
  mac: string
  model: string
  boot_order: number | null
  ip_v4_conf: { conf: string, ip: string | null } | null
  ip_v6_conf: { conf: string, ip: string | null } | null
  vlan: string | null
  firewall_policy: string | null
}

/** The CloudSigma fields kept in servers.extra, with their defaults (§3.1). */
export const EXTRA_DEFAULTS = {
  auto_start: false,
  context: true,
  cpu_model: null as string | null,
  cpu_type: 'amd',
  cpus_instead_of_cores: false,
  enable_numa: false,
  grantees: [] as unknown[],
  hv_relaxed: false,
  hv_tsc: false,
  hypervisor: 'kvm',
  permissions: [] as unknown[],
  pubkeys: [] as string[],
  requirements: [] as string[]
}
export type Extra = typeof EXTRA_DEFAULTS
const EXTRA_KEYS = Object.keys(EXTRA_DEFAULTS) as Array<keyof Extra>

// references to resources this service does not implement (ips, vlans, ...) still round-trip
function foreignRef (resource: string, id: string): Ref {
  return { resource_uri: `/api/2.0/${resource}/${id}/`, uuid: id }
}

/** The id of a reference to `resource` given as an id, a URI or an object with uuid/resource_uri. */
export function foreignId (input: unknown, resource: string): string | undefined {
  if (typeof input === 'string') {
    const m = new RegExp(`^(?:https?://[^/]+)?/api/2\\.0/${resource}/([^/]+)/?$`).exec(input)
    if (m) return m[1]
    return input !== '' && !input.includes('/') ? input : undefined
  }
  if (input !== null && typeof input === 'object') {
    const o = input as { uuid?: unknown, resource_uri?: unknown }
    if (typeof o.uuid === 'string') return foreignId(o.uuid, resource)
    if (typeof o.resource_uri === 'string') return foreignId(o.resource_uri, resource)
  }
  return undefined
}

/** The uuid `input` refers to; refused at `field` (named in the message as `where`, its place in the body). */
function uuidRef (input: unknown, resource: string, field: string, where = field): string {
  const id = relatedUuid(input, resource)
  if (!id) throw errors.validation(`${where} must be a uuid, a resource URI or an object with a uuid`, field)
  return id
}

// ---------------------------------------------------------------------------------------------
// NICs (§3.1): MACs are generated, updates match NICs by MAC

export function generateMac (taken: Set<string>): string {
  for (;;) {
    const mac = ['22', ...[...randomBytes(5)].map(b => b.toString(16).padStart(2, '0'))].join(':')
    if (!taken.has(mac)) return mac
  }
}

function ipConf (input: NicInputT['ip_v4_conf'], family: 4 | 6, point: string): StoredNic['ip_v4_conf'] {
  if (!input) return null
  const ip = input.ip === undefined || input.ip === null ? null : foreignId(input.ip, 'ips')
  if (input.ip !== undefined && input.ip !== null && !ip) throw errors.validation(`${point}.ip must be an IP address, an IP URI or an object with a uuid`, 'ip')
  if (ip && isIP(ip) !== family) throw errors.validation(`${point}.ip ${ip} is not an IPv${family} address`, 'ip')
  if (input.conf === 'static' && !ip) throw errors.validation(`${point}: conf static needs an ip`, 'ip')
  if (input.conf !== 'static' && ip) throw errors.validation(`${point}: conf ${input.conf} must not carry an ip`, 'ip')
  return { conf: input.conf, ip: ip ?? null }
}

/**
 * The new NIC list: entries with a MAC keep that existing NIC (an unknown MAC is an error),
 * entries without one are new NICs with a generated MAC; NICs left out are removed.
 */
export function planNics (inputs: NicInputT[], existing: StoredNic[]): StoredNic[] {
  const known = new Set(existing.map(n => n.mac))
  const used = new Set<string>()
  const taken = new Set(known)
  return inputs.map((input, i) => {
    const point = `nics[${i}]`
    let mac: string
    if (input.mac !== undefined && input.mac !== '') {
      mac = input.mac.toLowerCase()
      if (!known.has(mac)) throw errors.validation(`${point}: unknown mac ${input.mac}; leave mac out to add a NIC`, 'mac')
      if (used.has(mac)) throw errors.validation(`${point}: mac ${input.mac} is listed twice`, 'mac')
    } else {
      mac = generateMac(taken)
      taken.add(mac)
    }
    used.add(mac)
    const vlan = input.vlan === undefined || input.vlan === null ? null : uuidRef(input.vlan, 'vlans', 'vlan', `${point}.vlan`)
    const v4 = ipConf(input.ip_v4_conf, 4, `${point}.ip_v4_conf`)
    const v6 = ipConf(input.ip_v6_conf, 6, `${point}.ip_v6_conf`)
    if (vlan && (v4 || v6)) throw errors.validation(`${point}: a NIC has either a vlan or an IP configuration, not both`, 'nics')
    if (!vlan && !v4 && !v6) throw errors.validation(`${point}: a NIC needs ip_v4_conf, ip_v6_conf or vlan`, 'nics')
    return {
      mac,
      model: input.model ?? existing.find(n => n.mac === mac)?.model ?? 'virtio',
      boot_order: input.boot_order ?? null,
      ip_v4_conf: v4,
      ip_v6_conf: v6,
      vlan,
      firewall_policy: input.firewall_policy === undefined || input.firewall_policy === null ? null : uuidRef(input.firewall_policy, 'fwpolicies', 'firewall_policy', `${point}.firewall_policy`)
    }
  })
}

// ---------------------------------------------------------------------------------------------
// Wire form

const NO_IO = { bytes_recv: 0, bytes_sent: 0, packets_recv: 0, packets_sent: 0 }
const NO_DISK_IO = Object.fromEntries([
  'bytes_read', 'bytes_written', 'count_flush', 'count_read', 'count_written',
  'total_time_ns_flush', 'total_time_ns_read', 'total_time_ns_write'
].map(k => [k, 0]))

interface MountRow { driveId: string, device: string, devChannel: string, bootOrder: number | null, position: number }

function nicRuntime (n: StoredNic) {
  return {
    interface_type: n.vlan ? 'private' : 'public',
    io: { ...NO_IO },
    ip_v4: n.ip_v4_conf?.ip ? foreignRef('ips', n.ip_v4_conf.ip) : null,
    ip_v6: n.ip_v6_conf?.ip ? foreignRef('ips', n.ip_v6_conf.ip) : null
  }
}

function ipConfWire (c: StoredNic['ip_v4_conf']) {
  return c ? { conf: c.conf as 'dhcp', ip: c.ip ? foreignRef('ips', c.ip) : null } : null
}

/** A server row's NICs as stored (its `nics` JSON column). */
const storedNics = (row: Pick<ServerRow, 'nics'>): StoredNic[] => (row.nics ?? []) as unknown as StoredNic[]

export function serverToWire (row: ServerRow, mounts: MountRow[], jobs: Ref[]): ServerWire {
  const extra = { ...EXTRA_DEFAULTS, ...(row.extra as Partial<Extra>) }
  const nics = storedNics(row)
  const running = row.status === 'running'
  const drives: MountWire[] = [...mounts].sort((a, b) => a.position - b.position).map(m => ({
    boot_order: m.bootOrder,
    dev_channel: m.devChannel,
    device: m.device as MountWire['device'],
    drive: ref('drives', m.driveId),
    runtime: running ? { io: { ...NO_DISK_IO } } : null
  }))
  const nicWire: NicWire[] = nics.map(n => ({
    boot_order: n.boot_order,
    firewall_policy: n.firewall_policy ? foreignRef('fwpolicies', n.firewall_policy) : null,
    ip_v4_conf: ipConfWire(n.ip_v4_conf),
    ip_v6_conf: ipConfWire(n.ip_v6_conf),
    mac: n.mac,
    model: n.model as NicWire['model'],
    runtime: running ? nicRuntime(n) : null,
    vlan: n.vlan ? foreignRef('vlans', n.vlan) : null
  }))
  return {
    auto_start: extra.auto_start,
    context: extra.context,
    cpu: row.cpu,
    cpu_model: extra.cpu_model as 'kvm64' | null,
    cpu_type: extra.cpu_type as ServerWire['cpu_type'],
    cpus_instead_of_cores: extra.cpus_instead_of_cores,
    drives,
    enable_numa: extra.enable_numa,
    grantees: extra.grantees,
    hv_relaxed: extra.hv_relaxed,
    hv_tsc: extra.hv_tsc,
    hypervisor: extra.hypervisor,
    jobs,
    mem: Number(row.mem),
    meta: (row.meta ?? {}) as Record<string, string>,
    name: row.name,
    nics: nicWire,
    owner: ref('user', row.ownerId),
    permissions: extra.permissions,
    pubkeys: extra.pubkeys.map(id => foreignRef('keypairs', id)),
    requirements: extra.requirements,
    resource_uri: uri('servers', row.id),
    runtime: serverRuntime(row, nics),
    smp: row.smp,
    status: row.status as ServerWire['status'],
    tags: row.tags.map(id => ref('tags', id)),
    uuid: row.id,
    vnc_password: row.vncPassword
  }
}

/** A server's `runtime`: null unless it runs. */
function serverRuntime (row: Pick<ServerRow, 'status' | 'activeSince'>, nics: StoredNic[]): ServerWire['runtime'] {
  return row.status === 'running' && row.activeSince
    ? { active_since: activeSinceTime(row.activeSince), nics: nics.map(n => ({ ...nicRuntime(n), mac: n.mac })) }
    : null
}

export const SHORT_FIELDS = ['name', 'owner', 'resource_uri', 'runtime', 'status', 'uuid'] as const

/** The short-list object, as serverToWire's fields SHORT_FIELDS in that order, from the columns they need. */
export function serverToShortWire (row: Pick<ServerRow, 'id' | 'ownerId' | 'name' | 'status' | 'activeSince' | 'nics'>): Pick<ServerWire, typeof SHORT_FIELDS[number]> {
  return {
    name: row.name,
    owner: ref('user', row.ownerId),
    resource_uri: uri('servers', row.id),
    runtime: serverRuntime(row, storedNics(row)),
    status: row.status as ServerWire['status'],
    uuid: row.id
  }
}

export async function serversToWire (db: Db, rows: ServerRow[]): Promise<ServerWire[]> {
  const ids = rows.map(r => r.id)
  const [mounts, jobs] = await Promise.all([
    ids.length === 0 ? [] : db.serverDrive.findMany({ where: { serverId: { in: ids } } }),
    jobRefsFor(db, 'servers', ids)
  ])
  return rows.map(r => serverToWire(r, mounts.filter(m => m.serverId === r.id), jobs.get(r.id) ?? []))
}

/** The current wire object of an owned server, or undefined (event frames, GET). */
export async function loadServerWire (db: Db, ownerId: string, id: string): Promise<ServerWire | undefined> {
  const row = await db.server.findFirst({ where: { id, ownerId, deleted: false } })
  if (!row) return undefined
  return (await serversToWire(db, [row]))[0]
}

export async function announceServer (db: Db, ownerId: string, id: string, change: ChangeKind = 'changed'): Promise<void> {
  await publishChange(db, { ownerId, resourceType: 'servers', resourceId: id, change })
}

// ---------------------------------------------------------------------------------------------
// Checks

/**
 * The caller's server, locked for the rest of the transaction (power actions, update, delete,
 * clone): another account's, a deleted or an unknown server is 404 notexist at `uuid`.
 */
export async function lockOwnedServer (tx: Tx, ownerId: string, id: string): Promise<ServerRow> {
  if (!isUuid(id)) throw errors.notFound('Server', 'uuid')
  const lower = id.toLowerCase()
  await tx.$queryRaw`SELECT id FROM servers WHERE id = ${lower}::uuid FOR UPDATE`
  const row = await tx.server.findFirst({ where: { id: lower, ownerId, deleted: false } })
  if (!row) throw errors.notFound(`Server ${id}`, 'uuid')
  return row
}

/**
 * 503 when a job other than a power job links the server (e.g. a clone reading it). Power jobs
 * are governed by lockedByJob instead: they release the server just before their job row is
 * marked finished, and a client that sees `running` must be able to stop it at once.
 */
async function assertNoOtherJob (tx: Tx, id: string): Promise<void> {
  const conflicts = (await findConflicts(tx, [{ type: 'servers', id, mode: 'write' }]))
    .filter(c => c.operation !== 'server_start' && c.operation !== 'server_stop')
  if (conflicts.length > 0) {
    const c = conflicts[0]
    throw busyWith({ type: 'servers', id }, { id: c.jobId, operation: c.operation }, 'uuid')
  }
}

function checkMeta (meta: Record<string, string>): void {
  const bad = badMetaKey(meta)
  if (bad !== undefined) throw errors.validation(`meta keys must be 1 to 32 characters long: ${JSON.stringify(bad.slice(0, 40))}`, 'meta')
}

function extraFrom (input: Partial<ServerUpdateInputT>, base: Extra): Extra {
  const out: Record<string, unknown> = { ...base }
  for (const key of EXTRA_KEYS) {
    const value = (input as Record<string, unknown>)[key]
    if (value === undefined) continue
    out[key] = key === 'pubkeys' ? [...new Set((value as unknown[]).map(v => uuidRef(v, 'keypairs', 'pubkeys')))] : value
  }
  return out as Extra
}

// ---------------------------------------------------------------------------------------------
// Create, update, delete

export async function createServers (prisma: PrismaClient, ownerId: string, inputs: ServerCreateInputT[]): Promise<ServerWire[]> {
  // input checks that need no database come first: a bulk create is all or nothing
  const planned = inputs.map(input => {
    if (input.meta) checkMeta(input.meta)
    return {
      id: randomUUID(),
      input,
      tags: tagIds(input.tags ?? []),
      extra: extraFrom(input, EXTRA_DEFAULTS),
      nics: planNics(input.nics ?? [], []),
      mounts: parseMounts((input.drives ?? []) as MountInputT[])
    }
  })
  const ids = await prisma.$transaction(async (tx) => {
    for (const p of planned) {
      await checkMountable(tx, ownerId, p.id, p.mounts)
      await tx.server.create({
        data: {
          id: p.id,
          ownerId,
          name: p.input.name,
          cpu: p.input.cpu,
          mem: BigInt(p.input.mem),
          smp: p.input.smp ?? 1,
          vncPassword: p.input.vnc_password,
          status: 'stopped',
          meta: p.input.meta ?? {},
          tags: p.tags,
          nics: p.nics as unknown as object,
          extra: p.extra as unknown as object
        }
      })
      await replaceMounts(tx, ownerId, p.id, p.mounts)
      await announceServer(tx, ownerId, p.id, 'added')
    }
    return planned.map(p => p.id)
  }, { timeout: 60_000 })
  const rows = await prisma.server.findMany({ where: { id: { in: ids } } })
  const wires = await serversToWire(prisma, rows)
  return ids.map(id => wires.find(w => w.uuid === id)!)
}

const FULL_UPDATE_KEYS = ['cpu', 'mem', 'smp', 'vnc_password', 'drives', 'nics', ...EXTRA_KEYS] as const

/** An update whose checks that need no database have passed. */
interface PreparedUpdate {
  input: ServerUpdateInputT
  tags?: string[]
  mounts?: Mount[]
}

function prepareUpdate (input: ServerUpdateInputT): PreparedUpdate {
  if (input.meta) checkMeta(input.meta)
  return {
    input,
    tags: input.tags ? tagIds(input.tags) : undefined,
    mounts: input.drives ? parseMounts(input.drives as MountInputT[]) : undefined
  }
}

/**
 * PUT: a partial update. A stopped server takes every field; one that is starting, running or
 * stopping takes only name, meta and tags and silently ignores the rest (§3.4). A `drives` list
 * replaces the mounts: drives left out are detached.
 */
export async function updateServer (prisma: PrismaClient, ownerId: string, id: string, input: ServerUpdateInputT): Promise<ServerWire> {
  const prepared = prepareUpdate(input)
  return prisma.$transaction(async (tx) => {
    const updated = await updateServerIn(tx, ownerId, id, prepared)
    return (await serversToWire(tx, [updated]))[0]
  }, { timeout: 60_000 })
}

/**
 * PUT /servers/ (bulk): every server updated as by PUT /servers/{uuid}/, in request order (each
 * sees the ones before it: a disk one server lets go of can be mounted by a later one), in one
 * transaction: all or none. A server listed twice is a 400 at `uuid`.
 */
export async function updateServers (prisma: PrismaClient, ownerId: string, items: Array<{ id: string, input: ServerUpdateInputT }>): Promise<ServerWire[]> {
  const seen = new Set<string>()
  const prepared = items.map(item => {
    if (seen.has(item.id)) throw errors.validation(`Server ${item.id} is listed twice`, 'uuid')
    seen.add(item.id)
    return naming('Server', item.id, () => prepareUpdate(item.input))
  })
  return prisma.$transaction(async (tx) => {
    await lockServerRows(tx, items.map(i => i.id))
    const rows: ServerRow[] = []
    for (const [i, item] of items.entries()) rows.push(await naming('Server', item.id, async () => updateServerIn(tx, ownerId, item.id, prepared[i])))
    return serversToWire(tx, rows)
  }, { timeout: 60_000 })
}

async function updateServerIn (tx: Tx, ownerId: string, id: string, prepared: PreparedUpdate): Promise<ServerRow> {
  const { input, tags, mounts } = prepared
  const row = await lockOwnedServer(tx, ownerId, id)
  const full = acceptsFullUpdate(row.status)
  const wantsFull = FULL_UPDATE_KEYS.some(k => input[k] !== undefined)
  if (full && wantsFull) {
    // a job holding the server (e.g. a clone reading it) must not see its definition change
    if (row.lockedByJob !== null) throw errors.busy(`Server ${id} is busy with another operation; try again when it has finished`, 'uuid')
    await assertNoOtherJob(tx, row.id)
  }
  const data: Record<string, unknown> = {}
  if (input.name !== undefined) data.name = input.name
  if (input.meta !== undefined) data.meta = input.meta
  if (tags) data.tags = tags
  if (full) {
    if (input.cpu !== undefined) data.cpu = input.cpu
    if (input.mem !== undefined) data.mem = BigInt(input.mem)
    if (input.smp !== undefined) data.smp = input.smp
    if (input.vnc_password !== undefined) data.vncPassword = input.vnc_password
    if (EXTRA_KEYS.some(k => input[k] !== undefined)) data.extra = extraFrom(input, { ...EXTRA_DEFAULTS, ...(row.extra as Partial<Extra>) })
    if (input.nics) data.nics = planNics(input.nics, storedNics(row)) as unknown as object
    if (mounts) {
      await checkMountable(tx, ownerId, row.id, mounts)
      await replaceMounts(tx, ownerId, row.id, mounts)
    }
  }
  const updated = Object.keys(data).length > 0 ? await tx.server.update({ where: { id: row.id }, data }) : row
  await announceServer(tx, ownerId, row.id)
  return updated
}

/** SELECT ... FOR UPDATE on server rows, in id order (no deadlocks between bulk requests). */
async function lockServerRows (tx: Tx, ids: string[]): Promise<void> {
  const sorted = [...new Set(ids.filter(isUuid).map(i => i.toLowerCase()))].sort()
  if (sorted.length === 0) return
  await tx.$queryRaw`SELECT id FROM servers WHERE id = ANY(${sorted}::uuid[]) ORDER BY id FOR UPDATE`
}

export type Recurse = 'all_drives' | 'disks' | 'cdroms'

/** Which attached drives `?recurse=` deletes. */
export function recurseSelects (recurse: Recurse, media: string): boolean {
  return recurse === 'all_drives' || (recurse === 'disks' && media === 'disk') || (recurse === 'cdroms' && media === 'cdrom')
}

async function checkDeletable (tx: Tx, ownerId: string, id: string): Promise<ServerRow> {
  const row = await lockOwnedServer(tx, ownerId, id)
  const verdict = canDeleteServer(row.status)
  if (!verdict.ok) throw verdict.reason === 'busy' ? errors.busy(verdict.message, 'status') : errors.wrongState(verdict.message)
  if (row.lockedByJob) throw errors.busy(`Server ${id} is busy with another operation`, 'uuid')
  await assertNoOtherJob(tx, row.id)
  return row
}

/**
 * Deletes a stopped server. Its drives are detached (and become unmounted); with `recurse` every
 * selected drive is deleted too (drive_delete jobs), detached first from any other stopped server
 * that mounts it. A selected drive on a running server refuses the whole request (400 `status`);
 * one transaction, so nothing is half-deleted.
 */
export async function deleteServer (prisma: PrismaClient, ownerId: string, id: string, recurse?: Recurse): Promise<void> {
  await deleteServers(prisma, ownerId, [id], recurse)
}

/**
 * DELETE /servers/ (bulk), and the single delete: every server as deleteServer does, `recurse`
 * applying to each, in one transaction: one server that is unknown, another account's, running
 * or busy (or a selected drive that cannot go) deletes nothing. A server listed twice is deleted
 * once.
 */
export async function deleteServers (prisma: PrismaClient, ownerId: string, ids: string[], recurse?: Recurse): Promise<void> {
  const unique = [...new Set(ids.map(i => i.toLowerCase()))]
  await prisma.$transaction(async (tx) => {
    await lockServerRows(tx, unique)
    const rows: ServerRow[] = []
    for (const id of unique) rows.push(await naming('Server', id, async () => checkDeletable(tx, ownerId, id)))
    if (recurse) {
      const serverIds = rows.map(r => r.id)
      const mounts = await tx.serverDrive.findMany({ where: { serverId: { in: serverIds } }, select: { driveId: true, drive: { select: { media: true } } } })
      const doomed = [...new Set(mounts.filter(m => recurseSelects(recurse, m.drive.media)).map(m => m.driveId))]
      if (doomed.length > 0) await deleteDrivesIn(tx, ownerId, doomed)
    }
    for (const row of rows) {
      await detachAll(tx, ownerId, row.id)
      await tx.server.delete({ where: { id: row.id } })
      await announceServer(tx, ownerId, row.id)
    }
  }, { timeout: 60_000 })
}

// ---------------------------------------------------------------------------------------------
// Availability groups (§3.3)

/** The group key of guests a driver places on its one host. */
const DRIVER_HOST = ''

/**
 * The account's servers that are on a compute host (starting, running, stopping, paused: a
 * stopped server is on none, as on CloudSigma), grouped by host as the driver reports it; the
 * built-in driver runs no guests anywhere, so all of them share its one host (one group).
 */
export async function serverAvailabilityGroups (db: Db, driver: HypervisorDriver, ownerId: string): Promise<string[][]> {
  const rows = await db.server.findMany({
    where: { ownerId, deleted: false, status: { in: [...ACTIVE_SERVER_STATUSES] } },
    select: { id: true },
    orderBy: { id: 'asc' }
  })
  const ids = rows.map(r => r.id)
  const hosts = ids.length > 0 && driver.hosts ? await driver.hosts(ids) : new Map<string, string>()
  return availabilityGroups(ids.map(id => ({ id, host: hosts.get(id) ?? DRIVER_HOST })))
}

/** The servers sharing a host with the caller's server `id`, itself included; [] when it is not running; 404 when it is not theirs. */
export async function serverAvailabilityGroup (db: Db, driver: HypervisorDriver, ownerId: string, id: string): Promise<string[]> {
  const row = isUuid(id) ? await db.server.findFirst({ where: { id: id.toLowerCase(), ownerId, deleted: false }, select: { id: true, status: true } }) : null
  if (!row) throw errors.notFound(`Server ${id}`, 'uuid')
  if (!isServerActive(row.status)) return []
  return groupOf(await serverAvailabilityGroups(db, driver, ownerId), row.id)
}

// ---------------------------------------------------------------------------------------------
// Power actions (§3.2): each is a job moving the server through a transient status

export async function requestPowerAction (prisma: PrismaClient, ownerId: string, id: string, action: PowerAction): Promise<{ jobId: string }> {
  return prisma.$transaction(async (tx) => {
    const row = await lockOwnedServer(tx, ownerId, id)
    const verdict = planPowerAction(action, row.status)
    if (!verdict.ok) throw verdict.reason === 'busy' ? errors.busy(verdict.message, 'status') : errors.wrongState(verdict.message)
    if (row.lockedByJob) throw errors.busy(`Server ${id} is busy with another operation`, 'uuid')
    await assertNoOtherJob(tx, id)
    if (action === 'start') await checkDrivesReady(tx, id)
    const t = verdict.transition
    const jobId = newJobId()
    await tx.server.update({ where: { id }, data: { status: t.during, lockedByJob: jobId } })
    await enqueueJob(tx, {
      id: jobId,
      ownerId,
      operation: t.operation,
      params: { serverId: id, action, from: t.from, to: t.to },
      resources: [{ type: 'servers', id, mode: 'write' }],
      description: `${t.during} the server`,
      maxAttempts: 3
    })
    await announceServer(tx, ownerId, id)
    return { jobId }
  })
}

/**
 * A server starts only when every drive it mounts is ready: a drive a job holds (creating,
 * cloning_dst, resizing, uploading, being deleted) is 503 concurrency, retry later; an
 * unavailable one is 400. Drives being read by clones (cloning_src) are fine.
 */
async function checkDrivesReady (tx: Tx, serverId: string): Promise<void> {
  const mounts = await tx.serverDrive.findMany({
    where: { serverId },
    select: { drive: { select: { id: true, status: true, readers: true, lockedByJob: true, deleted: true } } }
  })
  for (const { drive: d } of mounts) {
    const verdict = canOperate('mount', d.status, d.readers)
    const status = displayStatus(d.status, d.readers)
    if (verdict === 'wrong_state') throw errors.validation(`Drive ${d.id} is ${status}; the server cannot start with it`, 'drives')
    if (verdict === 'busy' || d.lockedByJob || d.deleted) {
      throw errors.busy(`Drive ${d.id} is ${d.deleted ? 'being deleted' : status}; start the server when it is ready`, 'drives')
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Lists

export const serverFilters: FilterSpec = {
  name: { column: 'name', kind: 'string' },
  uuid: { column: 'id', kind: 'uuid' },
  tag: { column: 'tags', kind: 'uuid', build: (v) => ({ tags: { has: v.toLowerCase() } }) },
  status: { column: 'status', kind: 'string', choices: SERVER_STATUSES }
}

export const serverOrder: OrderSpec = {
  fields: { name: 'name', uuid: 'id', status: 'status', cpu: 'cpu', mem: 'mem' },
  default: 'name'
}

export async function listServers (db: Db, ownerId: string, query: Record<string, unknown>, detail: boolean): Promise<ListEnvelope<Partial<ServerWire>>> {
  const plan = planList(query, serverFilters, serverOrder, SERVER_FIELDS)
  const where = { ...plan.where, ownerId, deleted: false }
  const [total, rows] = await Promise.all([
    db.server.count({ where }),
    db.server.findMany({ where, orderBy: plan.orderBy, skip: plan.offset, take: plan.take })
  ])
  const wires = await serversToWire(db, rows)
  // fields= may ask the short list for any field
  const keep = detail || plan.fields ? undefined : SHORT_FIELDS
  const objects = keep
    ? wires.map(w => Object.fromEntries(keep.map(k => [k, w[k]])) as Partial<ServerWire>)
    : wires
  return envelope(plan, total, objects)
}

// ---------------------------------------------------------------------------------------------
// The service plugin

declare module 'fastify' {
  interface FastifyInstance {
    /** The hypervisor driver the server_start/server_stop jobs call; replaceable (tests, backends). */
    hypervisor: HypervisorDriver
  }
}

export default fp(async (app) => {
  app.decorate('hypervisor', new RecordingDriver({ delayMs: app.config.hypervisorDelayMs }))
}, { name: 'hypervisor' })
