// The server reads as one SQL statement each (issue 18): the page, its capped count, and each
// server's mounts and `jobs`, in one round trip, without Prisma's query compiler.
import type pg from 'pg'
import type { PrismaClient } from '../../db/client.ts'
import type { Server as ServerRow } from '../../db/generated/client.ts'
import { Params, cappedCountSql, filtersToSql, listMeta, orderToSql, pageToSql, sqlRows, truthfulTotal, type SqlFilter } from '../../http/list-sql.ts'
import { pickFields, planList, type ListPlan } from '../../http/listing.ts'
import { ref } from '../../http/uris.ts'
import { SERVER_FIELDS, type ServerWire } from './schemas.ts'
import { SHORT_FIELDS, listServers, serverFilters, serverOrder, serverToShortWire, serverToWire } from './service.ts'

const COLUMNS: Record<string, string> = { id: 's.id', name: 's.name', status: 's.status', cpu: 's.cpu', mem: 's.mem', tags: 's.tags' }

const CUSTOM: Record<string, SqlFilter> = {
  tag: (v, _op, p) => `${p.add(v.toLowerCase())} = ANY(s.tags)`
}

// jobs newest first as jobRefsFor; mounts in position order (serverToWire sorts them again)
const EXTRAS = `
  (SELECT coalesce(array_agg(j.id::text ORDER BY j.created DESC, j.id), '{}') FROM job_resources r JOIN jobs j ON j.id = r.job_id
    WHERE r.resource_type = 'servers' AND r.resource_id = s.id) AS job_ids,
  (SELECT coalesce(json_agg(json_build_object('driveId', m.drive_id, 'device', m.device, 'devChannel', m.dev_channel, 'bootOrder', m.boot_order, 'position', m.position) ORDER BY m.position), '[]')
    FROM server_drives m WHERE m.server_id = s.id) AS mounts`

interface Row {
  id: string,
  owner_id: string,
  name: string,
  cpu: number,
  mem: string,
  smp: number,
  vnc_password: string,
  status: string
  active_since: Date | null,
  meta: unknown,
  tags: string[],
  nics: unknown,
  extra: unknown,
  locked_by_job: string | null
  deleted: boolean,
  created_at: Date,
  updated_at: Date
  job_ids?: string[],
  mounts?: Array<{ driveId: string, device: string, devChannel: string, bootOrder: number | null, position: number }>
}

function toRow (r: Row): ServerRow {
  return {
    id: r.id,
    ownerId: r.owner_id,
    name: r.name,
    cpu: r.cpu,
    mem: BigInt(r.mem),
    smp: r.smp,
    vncPassword: r.vnc_password,
    status: r.status,
    activeSince: r.active_since,
    meta: r.meta as ServerRow['meta'],
    tags: r.tags,
    nics: r.nics as ServerRow['nics'],
    extra: r.extra as ServerRow['extra'],
    lockedByJob: r.locked_by_job,
    deleted: r.deleted,
    createdAt: r.created_at,
    updatedAt: r.updated_at
  }
}

const toWire = (r: Row): ServerWire => serverToWire(toRow(r), r.mounts ?? [], (r.job_ids ?? []).map(id => ref('jobs', id)))

async function listServersSql (pool: pg.Pool, ownerId: string, query: Record<string, unknown>, plan: ListPlan, detail: boolean) {
  const p = new Params()
  const filters = filtersToSql(query, serverFilters, COLUMNS, p, CUSTOM)
  if (!filters) return undefined
  const where = [`s.owner_id = ${p.add(ownerId)}::uuid`, 'NOT s.deleted', ...filters].join(' AND ')
  const whereValues = [...p.values]
  const order = orderToSql(plan.orderBy, COLUMNS)
  // the short list (name, owner, resource_uri, runtime, status, uuid) needs no mounts or jobs
  const keep = detail || plan.fields ? undefined : SHORT_FIELDS
  // and reads only the columns it shows (issue 18: pg parsed every column of each server, its
  // JSON and times, for a wire object of which six fields were kept)
  const rows = await sqlRows<Row & { total: number }>(pool, `
    SELECT t.total, ${keep ? 's.id, s.owner_id, s.name, s.status, s.active_since, s.nics' : `s.*, ${EXTRAS}`}
    FROM ${cappedCountSql('servers s', where)} AS t(total)
    LEFT JOIN LATERAL (SELECT s.* FROM servers s WHERE ${where} ORDER BY ${order} ${pageToSql(plan, p)}) s ON true
    ORDER BY ${order}`, p.values)
  const total = await truthfulTotal(pool, rows[0].total, 'servers s', where, whereValues)
  const page = rows.filter(r => r.id !== null)
  const objects: Array<Partial<ServerWire>> = keep
    ? page.map(r => serverToShortWire({ id: r.id, ownerId: r.owner_id, name: r.name, status: r.status, activeSince: r.active_since, nics: r.nics as ServerRow['nics'] }))
    : page.map(toWire)
  return { meta: listMeta(plan, total), objects: objects.map(o => pickFields(o, plan.fields)) }
}

/** The server lists: one SQL statement, or listServers (Prisma) for the filters only it compiles. */
export async function readServers (pool: pg.Pool, prisma: PrismaClient, ownerId: string, query: Record<string, unknown>, detail: boolean) {
  const plan = planList(query, serverFilters, serverOrder, SERVER_FIELDS)
  return await listServersSql(pool, ownerId, query, plan, detail) ?? await listServers(prisma, ownerId, query, detail)
}

/** GET /servers/:uuid/: the caller's server with mounts and jobs, or undefined. */
export async function getServerWireSql (pool: pg.Pool, ownerId: string, id: string): Promise<ServerWire | undefined> {
  const [row] = await sqlRows<Row>(pool, `SELECT s.*, ${EXTRAS} FROM servers s WHERE s.id = $1::uuid AND s.owner_id = $2::uuid AND NOT s.deleted`, [id.toLowerCase(), ownerId])
  return row ? toWire(row) : undefined
}
