// Text PostgreSQL cannot store (NUL) or UTF-8 cannot encode (lone UTF-16 surrogates), found
// anywhere in a parsed request, so it is refused as 400 instead of failing inside the database.

import { errors } from './errors.ts'

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
