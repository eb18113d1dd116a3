// The list conventions (filters, order_by, paging, total_count) compiled to one SQL statement for
// the hot reads (issue 18): Prisma's query compiler and one query per part cost more than the data.
import { createHash } from 'node:crypto'
import pg from 'pg'
import { parseFilters, type FilterOp, type FilterSpec } from '../domain/filters.ts'
import { DEFAULT_LIMIT, type ListPlan } from './listing.ts'
import { isoTime } from './uris.ts'

/** total_count is exact up to this many matches; beyond it, the planner's estimate (flagged). */
export const EXACT_COUNT_UP_TO = 10_000

/**
 * Positional parameters of one statement. The hot reads build their text from constants only
 * (column maps, ASC/DESC, these $n placeholders): every value from a request goes through add().
 */
export class Params {
  readonly values: unknown[] = []
  add (value: unknown): string {
    this.values.push(value)
    return `$${this.values.length}`
  }
}

/** SQL for one alternative of a filter, or undefined when only the Prisma path handles it. */
export type SqlFilter = (value: string, op: FilterOp, p: Params) => string | undefined

const CMP: Record<FilterOp, string> = { exact: '=', lt: '<', lte: '<=', gt: '>', gte: '>=', contains: '' }

/**
 * The WHERE terms for the query's filters (already validated by planList), AND across
 * conditions and OR across alternatives, as filtersToWhere builds them for Prisma. `columns`
 * maps model fields to SQL; `custom` overrides a filter by name. undefined: a filter this path
 * does not compile (e.g. __contains, a LIKE filtersToWhere escapes for Prisma), so the caller uses Prisma.
 */
export function filtersToSql (query: Record<string, unknown>, spec: FilterSpec, columns: Record<string, string>, p: Params, custom: Record<string, SqlFilter> = {}): string[] | undefined {
  const terms: string[] = []
  for (const c of parseFilters(query, spec)) {
    const name = Object.keys(spec).find(k => spec[k] === c.field)!
    const alternatives: string[] = []
    for (const v of c.values) {
      const sql = custom[name] ? custom[name](v, c.op, p) : defaultFilter(c.field.kind, columns[c.field.column], v, c.op, p)
      if (sql === undefined) return undefined
      alternatives.push(sql)
    }
    terms.push(alternatives.length === 1 ? alternatives[0] : `(${alternatives.join(' OR ')})`)
  }
  return terms
}

function defaultFilter (kind: string, column: string | undefined, value: string, op: FilterOp, p: Params): string | undefined {
  if (column === undefined || op === 'contains') return undefined
  switch (kind) {
    case 'string': return op === 'exact' ? `${column} = ${p.add(value)}` : undefined
    case 'uuid': return op === 'exact' ? `${column} = ${p.add(value.toLowerCase())}::uuid` : undefined
    // Prisma sends a JS Date: millisecond precision
    case 'date': return `${column} ${CMP[op]} ${p.add(new Date(value).toISOString())}::timestamptz`
    case 'int': return `${column} ${CMP[op]} ${p.add(BigInt(value).toString())}::bigint`
    default: return undefined
  }
}

/** ORDER BY for the plan's (model field, direction) list. */
export function orderToSql (orderBy: ListPlan['orderBy'], columns: Record<string, string>): string {
  return orderBy.map(o => {
    const [field, dir] = Object.entries(o)[0]
    return `${columns[field]} ${dir === 'desc' ? 'DESC' : 'ASC'}`
  }).join(', ')
}

/**
 * LIMIT and OFFSET, as parameters. `literalFirstPage`: except the default page size (20) and
 * offset 0, written as literals: the first page of the default size, which most requests read,
 * then has a text of its own whose generic plan knows them. A generic plan takes an unknown LIMIT
 * to fetch a tenth of the rows the planner expects for the account; where one account holds most
 * of the jobs that looked dearer than planning anew, so PostgreSQL planned the jobs list on every
 * request (0.69 ms of planning for 0.39 ms of execution, 8,000 jobs; issue 18). Both are integers
 * planList checked; a statement gets at most six texts this way (LIMIT 20, a parameter or none;
 * OFFSET 0 or a parameter). Only the jobs list asks for it: its page statement is the one measured
 * to re-plan (test/jobs/plan-cache.test.ts).
 */
export function pageToSql (plan: Pick<ListPlan, 'take' | 'offset'>, p: Params, literalFirstPage = false): string {
  const literal = (v: number, when: number) => literalFirstPage && v === when ? String(v) : p.add(v)
  return `${plan.take === undefined ? '' : `LIMIT ${literal(plan.take, DEFAULT_LIMIT)}`} OFFSET ${literal(plan.offset, 0)}`
}

/** A scalar subquery counting at most EXACT_COUNT_UP_TO + 1 matches: cheap at any table size. */
export function cappedCountSql (from: string, where: string): string {
  return `(SELECT count(*)::int FROM (SELECT 1 FROM ${from} WHERE ${where} LIMIT ${EXACT_COUNT_UP_TO + 1}) capped)`
}

export interface Total { total: number, estimated: boolean }

/**
 * The exact count when within the cap, otherwise the planner's estimate of the same WHERE.
 * `partial`: the count looked at part of the matches only (a window of the list, see
 * jobs/read-sql.ts), so even a count within the cap is a floor, and the total an estimate.
 */
export async function truthfulTotal (pool: pg.Pool, counted: number, from: string, where: string, values: unknown[], partial = false): Promise<Total> {
  if (counted <= EXACT_COUNT_UP_TO && !partial) return { total: counted, estimated: false }
  const { rows } = await pool.query<{ 'QUERY PLAN': Array<{ Plan: { 'Plan Rows': number } }> }>(`EXPLAIN (FORMAT JSON) SELECT 1 FROM ${from} WHERE ${where}`, values)
  const estimate = Math.round(rows[0]['QUERY PLAN'][0].Plan['Plan Rows'])
  // at least as many as were counted, whatever the statistics say
  return { total: Math.max(estimate, counted > EXACT_COUNT_UP_TO ? EXACT_COUNT_UP_TO + 1 : counted), estimated: true }
}

/** The list meta: total_count_estimated only appears when the count is an estimate. */
export function listMeta (plan: Pick<ListPlan, 'limit' | 'offset'>, t: Total): { limit: number, offset: number, total_count: number, total_count_estimated?: true } {
  return { limit: plan.limit, offset: plan.offset, total_count: t.total, ...(t.estimated ? { total_count_estimated: true as const } : {}) }
}

// timestamptz as Prisma's pg adapter reads it (a UTC session; JS Date parsing, milliseconds)
const TIMESTAMPTZ = 1184
const parseTimestamptz = (s: string): Date => {
  // the common shape, read without regular expressions (lists parse thousands):
  // 'YYYY-MM-DD HH:MM:SS[.ffffff]+00', milliseconds truncated as Date parsing does
  const n = s.length
  if (n >= 22 && n <= 29 && s[10] === ' ' && s[4] === '-' && s[n - 3] === '+' && s[n - 2] === '0' && s[n - 1] === '0' && (n === 22 || s[19] === '.') && s[0] !== '0') {
    const ms = n === 22 ? 0 : Number((s.slice(20, n - 3) + '00').slice(0, 3))
    return new Date(Date.UTC(Number(s.slice(0, 4)), Number(s.slice(5, 7)) - 1, Number(s.slice(8, 10)), Number(s.slice(11, 13)), Number(s.slice(14, 16)), Number(s.slice(17, 19)), ms))
  }
  return new Date(s.replace(' ', 'T').replace(/[+-]\d{2}(:\d{2})?$/, '+00:00'))
}
export { parseTimestamptz }
/** pg's type parsing with timestamptz read by parseTimestamptz */
const types: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => oid === TIMESTAMPTZ ? parseTimestamptz : pg.types.getTypeParser(oid, format as 'text')) as pg.CustomTypesConfig['getTypeParser']
}

/**
 * A timestamptz as PostgreSQL writes it inside JSON (to_json, json_agg; ISO 8601 in the session's
 * UTC, 'YYYY-MM-DDTHH:MM:SS[.f]+00:00' with the fraction's trailing zeros left out) straight to
 * the CloudSigma time isoTime gives its Date, without the Date: milliseconds kept as a Date keeps
 * them (a jobs page has 80 times; building and formatting their Dates was 9% of the service's
 * CPU on it, profiled).
 */
export function jsonWireTime (s: string): string {
  const n = s.length
  if (n >= 25 && n <= 32 && s[10] === 'T' && s[4] === '-' && s[n - 6] === '+' && s[n - 5] === '0' && s[n - 4] === '0' && s[n - 3] === ':' && (n === 25 || s[19] === '.') && s[0] !== '0') {
    const ms = n === 25 ? '000' : (s.slice(20, n - 6) + '00').slice(0, 3)
    return s.slice(0, 19) + '.' + ms + '000+00:00'
  }
  return isoTime(new Date(s))!
}

/**
 * Statement shapes run as named (prepared) statements: each connection parses and plans a shape
 * once instead of on every request (planning a list statement cost more than running it). The
 * text of a shape never holds a value (all are $n), so shapes are few; past this many distinct
 * ones a process runs the rest unnamed, so no client can grow the backends' statement caches.
 */
const PREPARED_SHAPES_MAX = 500
const shapeNames = new Map<string, string>()

function nameOf (text: string): string | undefined {
  let name = shapeNames.get(text)
  if (name === undefined && shapeNames.size < PREPARED_SHAPES_MAX) {
    name = 'read_' + createHash('sha1').update(text).digest('hex').slice(0, 24)
    shapeNames.set(text, name)
  }
  return name
}

/** One statement on the pool with the Prisma-compatible type parsing, prepared per connection. */
export async function sqlRows<R extends pg.QueryResultRow> (pool: pg.Pool, text: string, values: unknown[]): Promise<R[]> {
  return (await pool.query<R>({ name: nameOf(text), text, values, types })).rows
}
