// The drive reads as one SQL statement each (issue 18): the page, its capped count, and each
// drive's `jobs` and `mounted_on`, in one round trip, without Prisma's query compiler.
import type pg from 'pg'
import type { Drive as DriveRow } from '../../db/generated/client.ts'
import { RESTING_STATUSES } from '../../domain/drive-status.ts'
import { domainErrors as errors } from '../../domain/errors.ts'
import { isUuid } from '../../http/bodies.ts'
import { Params, cappedCountSql, filtersToSql, listMeta, orderToSql, pageToSql, sqlRows, truthfulTotal, type SqlFilter } from '../../http/list-sql.ts'
import type { ListPlan } from '../../http/listing.ts'
import { pickFields } from '../../http/listing.ts'
import { DRIVE_FIELDS, type DriveWire } from './schemas.ts'
import { SHORT_FIELDS, driveFilters, driveOrder, driveToShortWire, driveToWire, listDrives, type MeasureAllocated } from './service.ts'
import type { PrismaClient } from '../../db/client.ts'
import { planList } from '../../http/listing.ts'

const COLUMNS: Record<string, string> = {
  id: 'd.id', name: 'd.name', size: 'd.size', status: 'd.status', media: 'd.media', storageType: 'd.storage_type', tags: 'd.tags'
}

const CUSTOM: Record<string, SqlFilter> = {
  // as statusWhere: resting statuses show as cloning_src while a clone reads the drive
  status: (v, _op, p) => v === 'cloning_src'
    ? `(d.status = ANY(${p.add([...RESTING_STATUSES])}::text[]) AND d.readers > 0)`
    : (RESTING_STATUSES as readonly string[]).includes(v) ? `(d.status = ${p.add(v)} AND d.readers = 0)` : `d.status = ${p.add(v)}`,
  tag: (v, _op, p) => `${p.add(v.toLowerCase())} = ANY(d.tags)`
}

// the same order as jobRefsFor and loadDriveExtras: jobs newest first, servers by id, once each
const EXTRAS = `
  (SELECT coalesce(array_agg(j.id::text ORDER BY j.created DESC, j.id), '{}') FROM job_resources r JOIN jobs j ON j.id = r.job_id
    WHERE r.resource_type = 'drives' AND r.resource_id = d.id) AS job_ids,
  (SELECT coalesce(array_agg(m.server_id::text ORDER BY m.server_id), '{}') FROM (SELECT DISTINCT server_id FROM server_drives WHERE drive_id = d.id) m) AS server_ids`

/** A drives row as pg reads it (snake case, bigint size as text). */
export interface Row {
  id: string,
  owner_id: string,
  name: string,
  size: string,
  media: string,
  status: string,
  storage_type: string
  allow_multimount: boolean,
  affinities: string[],
  meta: unknown,
  tags: string[],
  iops: number | null,
  readers: number
  locked_by_job: string | null,
  deleted: boolean,
  created_at: Date,
  updated_at: Date,
  allocated_size: string | null,
  allocated_at: Date | null
  job_ids?: string[],
  server_ids?: string[]
}

export function toRow (r: Row): DriveRow {
  return {
    id: r.id,
    ownerId: r.owner_id,
    name: r.name,
    size: BigInt(r.size),
    media: r.media,
    status: r.status,
    storageType: r.storage_type,
    allowMultimount: r.allow_multimount,
    affinities: r.affinities,
    meta: r.meta as DriveRow['meta'],
    tags: r.tags,
    iops: r.iops,
    readers: r.readers,
    lockedByJob: r.locked_by_job,
    deleted: r.deleted,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    allocatedSize: r.allocated_size === null ? null : BigInt(r.allocated_size),
    allocatedAt: r.allocated_at
  }
}

/** The full wire objects, with runtime.allocated_size measured where stale. */
async function toWires (rows: Row[], measure: MeasureAllocated | undefined): Promise<DriveWire[]> {
  const drives = rows.map(toRow)
  await measure?.(drives)
  return drives.map((d, i) => driveToWire(d, { jobIds: rows[i].job_ids ?? [], serverIds: rows[i].server_ids ?? [] }))
}

/**
 * GET /drives/ and /drives/detail/ in one statement, or undefined when a filter needs the Prisma
 * path. `full`: the whole wire object (detail, or fields= beyond the short ones).
 */
export async function listDrivesSql (pool: pg.Pool, ownerId: string, query: Record<string, unknown>, plan: ListPlan, full: boolean, measure?: MeasureAllocated) {
  const p = new Params()
  const filters = filtersToSql(query, driveFilters, COLUMNS, p, CUSTOM)
  if (!filters) return undefined
  const where = [`d.owner_id = ${p.add(ownerId)}::uuid`, 'NOT d.deleted', ...filters].join(' AND ')
  const order = orderToSql(plan.orderBy, COLUMNS)
  // the short list reads the four columns it shows, not the whole row (issue 18: pg parsed each
  // drive's 19 columns, its JSON and arrays and three times as Dates, for owner, uuid and status)
  const rows = await sqlRows<Row & { total: number }>(pool, `
    SELECT t.total, ${full ? `d.*, ${EXTRAS}` : 'd.id, d.owner_id, d.status, d.readers'}
    FROM ${cappedCountSql('drives d', where)} AS t(total)
    LEFT JOIN LATERAL (SELECT d.* FROM drives d WHERE ${where} ORDER BY ${order} ${pageToSql(plan, p)}) d ON true
    ORDER BY ${order}`, p.values)
  const total = await truthfulTotal(pool, rows[0].total, 'drives d', where, p.values.slice(0, p.values.length - (plan.take === undefined ? 1 : 2)))
  const page = rows.filter(r => r.id !== null)
  const objects: Array<Partial<DriveWire>> = full ? await toWires(page, measure) : page.map(r => driveToShortWire({ id: r.id, ownerId: r.owner_id, status: r.status, readers: r.readers }))
  return { meta: listMeta(plan, total), objects: objects.map(o => pickFields(o, plan.fields)) }
}

/** GET /drives/:uuid/: the caller's drive with its jobs and servers; 404 as loadOwnedDrive. */
export async function getDriveWireSql (pool: pg.Pool, ownerId: string, id: string, measure?: MeasureAllocated): Promise<DriveWire> {
  if (!isUuid(id)) throw errors.notFound('Drive', 'uuid')
  const [row] = await sqlRows<Row>(pool, `SELECT d.*, ${EXTRAS} FROM drives d WHERE d.id = $1::uuid AND d.owner_id = $2::uuid AND NOT d.deleted`, [id.toLowerCase(), ownerId])
  if (!row) throw errors.notFound(`Drive ${id}`, 'uuid')
  return (await toWires([row], measure))[0]
}

/** The drive lists: one SQL statement, or listDrives (Prisma) for the filters only it compiles. */
export async function readDrives (pool: pg.Pool, prisma: PrismaClient, ownerId: string, query: Record<string, unknown>, detail: boolean, measure?: MeasureAllocated) {
  const plan = planList(query, driveFilters, driveOrder, DRIVE_FIELDS)
  // fields= may ask the short list for any field; then the full object is built
  const full = detail || (plan.fields?.some(f => !(SHORT_FIELDS as readonly string[]).includes(f)) ?? false)
  return await listDrivesSql(pool, ownerId, query, plan, full, measure) ?? await listDrives(prisma, ownerId, query, detail, measure)
}
