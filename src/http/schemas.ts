// Wire objects shared by every resource. Each has a stable $id so the OpenAPI document gets
// real component names; routes point at them with refTo().
import { Type, type Static, type TSchema } from 'typebox'

/** A `$ref` to a registered schema that keeps the schema's static type for the type provider. */
export function refTo<T extends TSchema & { $id?: string }> (schema: T) {
  if (!schema.$id) throw new Error('refTo needs a schema with an $id')
  return Type.Unsafe<Static<T>>(Type.Ref(schema.$id))
}

export const Ref = Type.Object({
  resource_uri: Type.String({ description: 'Path of the referenced object, e.g. /api/2.0/drives/{uuid}/' }),
  uuid: Type.String()
}, { $id: 'Ref', description: 'A reference to another object' })
export type RefT = Static<typeof Ref>

export const CloudSigmaError = Type.Object({
  error_type: Type.String({ description: 'validation, notexist, permission, backend, database, concurrency, billing or payment' }),
  error_message: Type.String(),
  error_point: Type.Union([Type.String(), Type.Null()], { description: 'The field the error is about, or null' })
}, { $id: 'Error' })

export const Errors = Type.Array(refTo(CloudSigmaError), { $id: 'Errors', description: 'CloudSigma error array: always an array, even for one error' })

export const ListMeta = Type.Object({
  limit: Type.Integer(),
  offset: Type.Integer(),
  total_count: Type.Integer({ description: 'Number of objects matching the filters, before paging; exact up to 10,000, otherwise the database\'s estimate (then total_count_estimated is true)' }),
  total_count_estimated: Type.Optional(Type.Literal(true, { description: 'Present (true) only when more than 10,000 objects match: total_count is then an estimate (above 10,000), not an exact count' }))
}, { $id: 'ListMeta' })

/**
 * `null` in an input's union: a `const`, not `type: 'null'`, whose check the validator's type
 * coercion (coerceTypes) passes by turning 0, "" and false into null (`"boot_order": 0` was stored
 * as null). First in its union, so an integer branch never coerces null itself into 0.
 */
export const nullInput = () => Type.Unsafe<null>({ const: null })

/** A related-field input: a uuid, a resource URI, or an object carrying `uuid` or `resource_uri`. */
export const RelatedInput = Type.Union([
  Type.String(),
  Type.Object({ uuid: Type.Optional(Type.String()), resource_uri: Type.Optional(Type.String()) })
], { $id: 'RelatedInput' })

/** GET /{drives,servers}/availability_groups/: the account's objects grouped by the host they share. */
export const AvailabilityGroups = Type.Array(Type.Array(Type.String()), {
  $id: 'AvailabilityGroups',
  description: 'One array of uuids per physical host; every placed object of the account is in exactly one of them'
})

/** GET /{drives,servers}/availability_groups/{uuid}/: the uuids sharing the object's host, itself included. */
export const AvailabilityGroup = Type.Array(Type.String(), {
  $id: 'AvailabilityGroup',
  description: 'The uuids on the same physical host as the one asked about, that one included; [] when it is on no host'
})

export const Meta = Type.Record(Type.String(), Type.String(), { $id: 'Meta', description: 'Free-form string key/value pairs; keys at most 32 characters' })

/**
 * The most objects one bulk update or delete (PUT, DELETE /drives/ and /servers/) or server
 * create takes: their transaction writes object by object, and many more outlast its 60 s limit,
 * which answered a 503 "busy" that no retry could get past.
 */
export const BULK_MAX_OBJECTS = 1000

/** The longest name of a drive or server (every way of making one: create, update, clone, uploads). */
export const NAME_MAX_LENGTH = 1024

export const UuidParams = Type.Object({ uuid: Type.String({ format: 'uuid' }) })

/** `fields=`, documented once. */
export const FIELDS_DESCRIPTION = 'Comma-separated fields to keep in each object; a name the object does not have is a 400 at `fields`'

/** Query parameters every list accepts; resource filters are extra parameters. */
export const ListQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 0, maximum: 2147483647, description: 'Page size; 0 returns all objects (default 20)' })),
  offset: Type.Optional(Type.Integer({ minimum: 0, maximum: 2147483647 })),
  order_by: Type.Optional(Type.String({ description: 'Comma-separated fields, `-` prefix for descending' })),
  fields: Type.Optional(Type.String({ description: FIELDS_DESCRIPTION })),
  format: Type.Optional(Type.String())
}, { additionalProperties: true })

export function listOf<T extends TSchema> (item: T, id: string) {
  return Type.Object({ meta: refTo(ListMeta), objects: Type.Array(item) }, { $id: id })
}

export function objectsOf<T extends TSchema> (item: T, id: string) {
  return Type.Object({ objects: Type.Array(item) }, { $id: id })
}

/**
 * Error responses, by status, for route schemas: the ones every /api/2.0/ route can give (400 bad
 * input, 401 credentials, 406 Accept, 408 idle body, 413/415 body size and type, 429 failed logins, 500, 503 overload or database outage)
 * plus the route's own (404, 410, ...).
 */
export function errorResponses (...codes: number[]): Record<number, ReturnType<typeof refTo<typeof Errors>>> {
  const out: Record<number, ReturnType<typeof refTo<typeof Errors>>> = {}
  // 405: a route with a parameter is also where a static path's other methods land (DELETE /drives/detail/)
  for (const code of [...new Set([400, 401, 405, 406, 408, 413, 415, 429, 500, 503, ...codes])].sort()) out[code] = refTo(Errors)
  return out
}

/** What `GET /{resource}/schema/` answers: the CloudSigma (Tastypie) resource description. */
export const ResourceSchema = Type.Object({
  allowed_detail_http_methods: Type.Array(Type.String()),
  allowed_list_http_methods: Type.Array(Type.String()),
  default_format: Type.String(),
  default_limit: Type.Integer(),
  fields: Type.Record(Type.String(), Type.Object({
    default: Type.Unknown(),
    help_text: Type.String(),
    readonly: Type.Boolean(),
    required: Type.Boolean(),
    type: Type.String(),
    choices: Type.Optional(Type.Array(Type.Unknown()))
  }, { additionalProperties: true })),
  filtering: Type.Record(Type.String(), Type.Unknown()),
  ordering: Type.Array(Type.String())
}, { $id: 'ResourceSchema', description: 'A resource description in the CloudSigma schema format' })

export const sharedSchemas: TSchema[] = [Ref, CloudSigmaError, Errors, ListMeta, RelatedInput, AvailabilityGroups, AvailabilityGroup, Meta, ResourceSchema]
