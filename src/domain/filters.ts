// CloudSigma list filters (spec §1.8), as pure functions: parameters AND, repeated parameters AND,
// comma-separated alternatives OR, with `\,` for a literal comma and `\\` for a backslash.

/** Splits one filter value into its OR-ed alternatives, honouring `\,` and `\\` escapes. */
export function splitAlternatives (value: string): string[] {
  const out: string[] = []
  let current = ''
  for (let i = 0; i < value.length; i++) {
    const ch = value[i]
    if (ch === '\\' && i + 1 < value.length && (value[i + 1] === ',' || value[i + 1] === '\\')) {
      current += value[i + 1]
      i++
    } else if (ch === ',') {
      out.push(current)
      current = ''
    } else {
      current += ch
    }
  }
  out.push(current)
  return out
}

export type FilterOp = 'exact' | 'contains' | 'lt' | 'lte' | 'gt' | 'gte'
export type FilterKind = 'string' | 'uuid' | 'date' | 'int' | 'array'

export interface FilterField {
  /** The model field the filter applies to. */
  column: string
  kind: FilterKind
  /** Allowed values, e.g. statuses; others are a validation error. */
  choices?: readonly string[]
  /** Builds the where-clause for one alternative; overrides the default by kind. */
  build?: (value: string, op: FilterOp) => Record<string, unknown>
}

export type FilterSpec = Record<string, FilterField>

export interface FilterCondition {
  param: string
  field: FilterField
  op: FilterOp
  values: string[]
}

export class FilterError extends Error {
  override name = 'FilterError'
  constructor (readonly param: string, message: string) {
    super(message)
  }
}

const OPS: FilterOp[] = ['contains', 'lt', 'lte', 'gt', 'gte']
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** A parameter's field and operator; `unknownOp` when it ends in `__<something>` that is no operator (`state__in`). */
function splitParam (key: string): { name: string, op: FilterOp, unknownOp?: string } {
  const at = key.lastIndexOf('__')
  if (at > 0) {
    const suffix = key.slice(at + 2)
    const op = suffix === 'icontains' ? 'contains' : suffix
    if ((OPS as string[]).includes(op)) return { name: key.slice(0, at), op: op as FilterOp }
    return { name: key.slice(0, at), op: 'exact', unknownOp: suffix }
  }
  return { name: key, op: 'exact' }
}

/** The forms a field's filter takes, for an error message. */
function formsOf (name: string, field: FilterField): string {
  const ops = field.kind === 'string' ? ['contains'] : field.kind === 'date' || field.kind === 'int' ? ['lt', 'lte', 'gt', 'gte'] : []
  return [`${name}=a,b (any of)`, ...ops.map(op => `${name}__${op}=`)].join(', ')
}

/**
 * Reads the filters a resource declares out of a parsed query string. Parameters the spec does
 * not declare are ignored (they are paging, `fields`, `format`, ...); a declared field with an
 * operator that is not one of OPS is a FilterError.
 */
export function parseFilters (query: Record<string, unknown>, spec: FilterSpec): FilterCondition[] {
  const conditions: FilterCondition[] = []
  for (const [key, raw] of Object.entries(query)) {
    const { name, op, unknownOp } = splitParam(key)
    // own properties only: `constructor` or `__proto__` are not filters
    const field = Object.hasOwn(spec, name) ? spec[name] : undefined
    if (!field) continue
    // a filter's field with an operator it does not have (`state__in`, `name__startswith`) is an
    // error, not a parameter to ignore: ignored, it would answer with every object unfiltered
    if (unknownOp !== undefined) throw new FilterError(key, `Filter ${key} is not supported: ${name} takes ${formsOf(name, field)}`)
    const comparable = field.kind === 'date' || field.kind === 'int'
    if ((op === 'contains' && field.kind !== 'string') || (['lt', 'lte', 'gt', 'gte'].includes(op) && !comparable)) {
      throw new FilterError(key, `Filter ${key} is not supported`)
    }
    for (const occurrence of Array.isArray(raw) ? raw : [raw]) {
      const values = splitAlternatives(String(occurrence))
      for (const v of values) validateValue(key, field, v)
      conditions.push({ param: key, field, op, values })
    }
  }
  return conditions
}

/** A date JavaScript parses and a PostgreSQL timestamp column holds (years 1 to 9999, as ISO 8601 writes them). */
export function isStorableDate (value: string): boolean {
  const ms = Date.parse(value)
  if (Number.isNaN(ms)) return false
  const year = new Date(ms).getUTCFullYear()
  return year >= 1 && year <= 9999
}

const INT8_MIN = -(2n ** 63n)
const INT8_MAX = 2n ** 63n - 1n

function isInt8 (value: string): boolean {
  if (!/^-?\d{1,19}$/.test(value)) return false
  const n = BigInt(value)
  return n >= INT8_MIN && n <= INT8_MAX
}

function validateValue (param: string, field: FilterField, value: string): void {
  if (field.kind === 'uuid' && !UUID.test(value)) throw new FilterError(param, `Filter ${param}: ${JSON.stringify(value)} is not a uuid`)
  if (field.kind === 'date' && !isStorableDate(value)) throw new FilterError(param, `Filter ${param}: ${JSON.stringify(value)} is not a date between the years 1 and 9999`)
  if (field.kind === 'int' && !isInt8(value)) throw new FilterError(param, `Filter ${param}: ${JSON.stringify(value)} is not a 64-bit integer`)
  if (field.choices && !field.choices.includes(value)) {
    throw new FilterError(param, `Filter ${param}: ${JSON.stringify(value)} is not one of ${field.choices.join(', ')}`)
  }
}

/**
 * `value` as a LIKE pattern matching itself only: `%`, `_` and the escape character `\` (PostgreSQL's
 * default) each behind a `\`. Prisma's `contains` puts its value between `%`s as it is, wildcards and all.
 */
export const escapeLike = (value: string): string => value.replace(/[\\%_]/g, '\\$&')

function clause (field: FilterField, op: FilterOp, value: string): Record<string, unknown> {
  if (field.build) return field.build(value, op)
  const v: unknown = field.kind === 'date' ? new Date(value) : field.kind === 'int' ? BigInt(value) : field.kind === 'uuid' ? value.toLowerCase() : value
  switch (op) {
    case 'exact':
      return field.kind === 'array' ? { [field.column]: { has: v } } : { [field.column]: { equals: v } }
    case 'contains':
      return { [field.column]: { contains: escapeLike(value), mode: 'insensitive' } }
    default:
      return { [field.column]: { [op]: v } }
  }
}

/** A Prisma `where` for the conditions: AND across conditions, OR across alternatives. */
export function filtersToWhere (conditions: FilterCondition[]): Record<string, unknown> {
  if (conditions.length === 0) return {}
  return {
    AND: conditions.map(c => c.values.length === 1
      ? clause(c.field, c.op, c.values[0])
      : { OR: c.values.map(v => clause(c.field, c.op, v)) })
  }
}

export interface OrderSpec {
  /** Wire name → model field. */
  fields: Record<string, string>
  default: string
}

export class OrderError extends Error {
  override name = 'OrderError'
}

/** Parses `order_by` (comma list, `-` for descending) into a Prisma orderBy, with a stable tiebreak. */
export function parseOrder (raw: unknown, spec: OrderSpec, tiebreak = 'id'): Array<Record<string, 'asc' | 'desc'>> {
  const text = typeof raw === 'string' && raw !== '' ? raw : spec.default
  const out: Array<Record<string, 'asc' | 'desc'>> = []
  for (const part of text.split(',').map(s => s.trim()).filter(Boolean)) {
    const desc = part.startsWith('-')
    const name = desc ? part.slice(1) : part
    const column = Object.hasOwn(spec.fields, name) ? spec.fields[name] : undefined
    if (!column) throw new OrderError(`order_by: cannot order by ${JSON.stringify(name)}; allowed: ${Object.keys(spec.fields).join(', ')}`)
    out.push({ [column]: desc ? 'desc' : 'asc' })
  }
  if (!out.some(o => tiebreak in o)) out.push({ [tiebreak]: out.at(-1)?.[Object.keys(out.at(-1) ?? {})[0]] ?? 'asc' })
  return out
}
