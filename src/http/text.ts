// Text PostgreSQL cannot store (NUL) or UTF-8 cannot encode (lone UTF-16 surrogates), found
// anywhere in a parsed request, so it is refused as 400 instead of failing inside the database.

import { errors } from './errors.ts'

declare module 'fastify' {
  interface FastifyRequest {
    /** where the query and the body, as they came (or as a create hook reshaped it), hold values the validator may coerce loosely into numbers */
    looseNumbers?: { query: Array<Array<string | number>>, body: Array<Array<string | number>> }
  }
}

const UNSTORABLE = /\0|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/

export function isStorableText (value: string): boolean {
  return !UNSTORABLE.test(value)
}

/**
 * The name of the first field (key or value) holding unstorable text, searching strings, arrays
 * and plain objects; undefined when everything is storable. `point` names the top-level value.
 */
export function unstorableField (value: unknown, point: string | null = null, depth = 0): string | null | undefined {
  if (typeof value === 'string') return isStorableText(value) ? undefined : point
  if (depth > 32 || value === null || typeof value !== 'object') return undefined
  if (Array.isArray(value)) {
    for (const item of value) {
      const found = unstorableField(item, point, depth + 1)
      if (found !== undefined) return found
    }
    return undefined
  }
  // streams and buffers are bytes, not text (query and params objects have odd prototypes: walked)
  if (ArrayBuffer.isView(value) || typeof (value as { pipe?: unknown }).pipe === 'function' || value instanceof Date) return undefined
  for (const [key, item] of Object.entries(value)) {
    if (!isStorableText(key)) return key.replace(UNSTORABLE, '\ufffd')
    const found = unstorableField(item, key, depth + 1)
    if (found !== undefined) return found
  }
  return undefined
}

/** 400 at the offending field when `value` holds text the database cannot store. */
export function assertStorable (value: unknown, where: string): void {
  const point = unstorableField(value)
  if (point !== undefined) throw errors.validation(`${where} holds a NUL byte or an unpaired UTF-16 surrogate`, point)
}

// ---------------------------------------------------------------------------------------------
// Numbers sent as text

/**
 * A number as a client may send it in text (a query parameter, or a JSON string where the spec's
 * clients send `"size": "1024000000"`, §1.15): decimal digits, an optional fraction and exponent.
 */
const DECIMAL = /^-?\d+(\.\d+)?([eE][+-]?\d+)?$/

/**
 * A value the validator would turn into a number though it is not one written in decimal (Ajv's
 * coercion takes `"0x10"`, `" "`, `"Infinity"`, `"1e400"`, `true`), or a number that is not finite
 * (JSON's `1e400` parses as Infinity). Not null: a GET's object sent back whole in a PUT (as
 * clients do) carries `"iops": null`, which stays accepted.
 */
function looseNumber (value: unknown): boolean {
  if (typeof value === 'boolean') return true
  if (typeof value === 'number') return !Number.isFinite(value)
  if (typeof value !== 'string') return false
  return !DECIMAL.test(value) || !Number.isFinite(Number(value))
}

/** Where `value` (a request's query or JSON body, as parsed) holds loose numbers: the paths of those values. */
export function looseNumberPaths (value: unknown, path: Array<string | number> = [], found: Array<Array<string | number>> = [], depth = 0): Array<Array<string | number>> {
  if (looseNumber(value)) {
    found.push(path)
    return found
  }
  if (depth > 32 || value === null || typeof value !== 'object' || ArrayBuffer.isView(value) || typeof (value as { pipe?: unknown }).pipe === 'function') return found
  if (Array.isArray(value)) value.forEach((item, i) => looseNumberPaths(item, [...path, i], found, depth + 1))
  else for (const [key, item] of Object.entries(value)) looseNumberPaths(item, [...path, key], found, depth + 1)
  return found
}

/**
 * 400 at the field when validation left a number at one of `paths` (looseNumberPaths of the input
 * as it came): `?wait=Infinity` waited for ever, `"iops": "1e400"` failed in the database (a
 * 500), `"size": "0x10"` resized a drive to 16 bytes. A loose value validation kept as it was
 * (a name `"Infinity"`, `true` for a boolean) or dropped (an unknown field) is not refused.
 */
export function assertDecimalNumbers (validated: unknown, paths: ReadonlyArray<ReadonlyArray<string | number>>, where: string): void {
  for (const path of paths) {
    let v: unknown = validated
    for (const p of path) v = v === null || typeof v !== 'object' ? undefined : (v as Record<string | number, unknown>)[p]
    if (typeof v !== 'number') continue
    const point = [...path].reverse().find(p => typeof p === 'string') ?? null
    throw errors.validation(`${where}: ${point ?? 'a value'} must be a finite number written in decimal digits`, point)
  }
}
