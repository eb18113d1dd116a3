// List conventions shared by every collection: paging (§1.6), `fields=` (§1.7), filters (§1.8),
// `order_by` (§1.9) and the `{meta, objects}` envelope (§1.5).
import { errors } from './errors.ts'
import { FilterError, OrderError, filtersToWhere, parseFilters, parseOrder, type FilterSpec, type OrderSpec } from '../domain/filters.ts'

export const DEFAULT_LIMIT = 20
const MAX_PAGING = 2 ** 31 - 1

export interface ListQuery {
  limit?: number
  offset?: number
  order_by?: string
  fields?: string
  [filter: string]: unknown
}

export interface ListPlan {
  limit: number
  offset: number
  /** `take` for Prisma: undefined when limit=0 asks for everything. */
  take: number | undefined
  where: Record<string, unknown>
  orderBy: Array<Record<string, 'asc' | 'desc'>>
  fields: string[] | undefined
}

/** `fields`: the names `fields=` may keep (the wire object's keys). */
export function planList (query: ListQuery, filters: FilterSpec, order: OrderSpec, fields: readonly string[]): ListPlan {
  const limit = query.limit ?? DEFAULT_LIMIT
  const offset = query.offset ?? 0
  // ajv lets `Infinity` through as an integer; paging numbers must fit PostgreSQL's int4
  for (const [point, n] of [['limit', limit], ['offset', offset]] as const) {
    if (!Number.isSafeInteger(n) || n < 0 || n > MAX_PAGING) throw errors.validation(`${point} must be an integer from 0 to ${MAX_PAGING}`, point)
  }
  let where: Record<string, unknown>
  let orderBy: ListPlan['orderBy']
  try {
    where = filtersToWhere(parseFilters(query, filters))
  } catch (err) {
    if (err instanceof FilterError) throw errors.validation(err.message, err.param)
    throw err
  }
  try {
    orderBy = parseOrder(query.order_by, order)
  } catch (err) {
    if (err instanceof OrderError) throw errors.validation(err.message, 'order_by')
    throw err
  }
  return { limit, offset, take: limit === 0 ? undefined : limit, where, orderBy, fields: parseFields(query.fields, fields) }
}

/**
 * `fields=uuid,status` as a list; undefined when absent or empty. A name the object does not have
 * is a 400 naming the ones it has: ignoring it answered `{}` objects (or, with a typo beside a
 * good name, objects short of the field the client thought it asked for).
 */
export function parseFields (raw: unknown, known: readonly string[]): string[] | undefined {
  if (typeof raw !== 'string' || raw.trim() === '') return undefined
  const fields = raw.split(',').map(s => s.trim()).filter(Boolean)
  const unknown = fields.filter(f => !known.includes(f))
  if (unknown.length > 0) {
    const names = unknown.map(f => JSON.stringify(f)).join(', ')
    throw errors.validation(`Unknown field${unknown.length > 1 ? 's' : ''} ${names} in fields; the fields are ${[...known].sort().join(', ')}`, 'fields')
  }
  return fields.length > 0 ? fields : undefined
}

/** Keeps only the requested keys of a wire object (`fields=uuid,status`). */
export function pickFields<T extends object> (obj: T, fields: string[] | undefined): Partial<T> {
  if (!fields) return obj
  const out: Record<string, unknown> = {}
  for (const f of fields) if (Object.hasOwn(obj, f)) out[f] = (obj as Record<string, unknown>)[f]
  return out as Partial<T>
}

export interface ListEnvelope<T> {
  meta: { limit: number, offset: number, total_count: number }
  objects: T[]
}

export function envelope<T extends object> (plan: ListPlan, total: number, objects: T[]): ListEnvelope<Partial<T>> {
  return {
    meta: { limit: plan.limit, offset: plan.offset, total_count: total },
    objects: objects.map(o => pickFields(o, plan.fields))
  }
}
