// Request-body conventions: the three create envelopes (§1.5) and related-field inputs (§1.12).
import type { FastifyRequest } from 'fastify'
import { errors } from './errors.ts'
import { looseNumberPaths } from './text.ts'

/** `{"objects":[...]}`, a bare array or a bare object all become `{objects: [...]}`. */
export function normalizeCreateBody (body: unknown): { objects: unknown[] } {
  if (Array.isArray(body)) return { objects: body }
  if (body !== null && typeof body === 'object') {
    const objects = (body as { objects?: unknown }).objects
    if (Array.isArray(objects)) return { objects }
    return { objects: [body] }
  }
  throw errors.validation('The request body must be a JSON object or array')
}

/**
 * preValidation hook for the collection routes (POST create, bulk PUT and DELETE), so the body
 * schema only has to describe one form.
 */
export async function createBodyHook (request: FastifyRequest): Promise<void> {
  request.body = normalizeCreateBody(request.body)
  // the loose numbers were found in the body as it came (input-guard): their paths moved
  if (request.looseNumbers !== undefined) request.looseNumbers.body = looseNumberPaths(request.body)
}

/** The canonical 8-4-4-4-12 hex spelling, any case; also the ajv `uuid` format (app.ts), whose default admits `urn:uuid:`. */
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const URI = /^(?:https?:\/\/[^/]+)?\/api\/2\.0\/([a-z_]+)\/([0-9a-fA-F-]{36})\/?$/

/**
 * The uuid a related-field input refers to: a bare uuid, a `/api/2.0/<res>/<uuid>/` URI, or an
 * object with `uuid` or `resource_uri`. Returns undefined when the input is none of these.
 */
export function relatedUuid (input: unknown, resource?: string): string | undefined {
  if (typeof input === 'string') {
    if (UUID.test(input)) return input.toLowerCase()
    const m = URI.exec(input)
    if (m && (!resource || m[1] === resource) && UUID.test(m[2])) return m[2].toLowerCase()
    return undefined
  }
  if (input !== null && typeof input === 'object') {
    const o = input as { uuid?: unknown, resource_uri?: unknown }
    if (typeof o.uuid === 'string') return relatedUuid(o.uuid, resource)
    if (typeof o.resource_uri === 'string') return relatedUuid(o.resource_uri, resource)
  }
  return undefined
}

export function requireRelatedUuid (input: unknown, point: string, resource?: string): string {
  const id = relatedUuid(input, resource)
  if (!id) throw errors.validation(`${point} must be a uuid, a resource URI or an object with a uuid`, point)
  return id
}

/**
 * A bulk PUT's objects → the uuid each names (by `uuid` or `resource_uri`, 400 at `uuid` otherwise)
 * and the rest of it, the fields to apply.
 */
export function bulkUpdateItems<T extends { uuid?: string, resource_uri?: string }> (objects: T[], resource: string): Array<{ id: string, input: Omit<T, 'uuid' | 'resource_uri'> }> {
  return objects.map(({ uuid, resource_uri: uri, ...input }) => ({ id: requireRelatedUuid({ uuid, resource_uri: uri }, 'uuid', resource), input }))
}

/** Tag references (uuids, URIs or objects) → their distinct uuids, in order; 400 at `tags` otherwise. */
export function tagIds (tags: unknown[]): string[] {
  return [...new Set(tags.map(t => requireRelatedUuid(t, 'tags', 'tags')))]
}

export function isUuid (value: string): boolean {
  return UUID.test(value)
}
