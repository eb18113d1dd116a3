// The `?do=` actions in the OpenAPI document. One route serves every action of a resource
// (POST /api/2.0/drives/{uuid}/action/?do=clone|resize|...), and OpenAPI allows one operation per
// path and method, so a generated client could only type that route's body and answer as "any of
// them". Each action therefore also gets an operation of its own under a path key that carries
// its query string, `/api/2.0/drives/{uuid}/action/?do=clone`: the URL a client sends is exactly
// the wire URL, and both openapi-typescript (+ openapi-fetch) and @hey-api/openapi-ts turn the key
// into a typed call (body in, result out) that sends that URL as it is. Those operations take no
// query parameters (a generated client appends its own `?...` after the key's, which would break
// the URL): `?avoid=` is sent through the generic operation, which stays, with `do` as an enum and
// the bodies and results as `anyOf` the actions'. Lint: Redocly's `path-not-include-query` rule is
// off in its recommended set (and in openapi/redocly.yaml).
import type { TSchema } from 'typebox'
import type { Action, ActionRegistry } from './actions.ts'

type Json = Record<string, unknown>
interface Operation extends Json {
  operationId: string
  tags?: string[]
  parameters?: Array<{ in: string, name: string, schema?: Json }>
  responses: Record<string, Json>
}
interface Document { paths: Record<string, Record<string, Operation>>, components: { schemas: Record<string, Json> } }

const JSON_TYPE = 'application/json'

/** The path key of one action's own operation: the wire URL, query string included. */
export function actionPath (resource: string, name: string): string {
  return `/api/2.0/${resource}s/{uuid}/action/?do=${name}`
}

/** The `/api/2.0/{resource}s/{uuid}/action/` key of a registry's generic operation. */
export function genericActionPath (resource: string): string {
  return `/api/2.0/${resource}s/{uuid}/action/`
}

/**
 * A route-schema (TypeBox) schema as an OpenAPI one: `{"$ref": "Drive"}` (a registered schema's
 * `$id`) becomes `#/components/schemas/Drive`; a schema with an `$id` that is not a component yet
 * becomes one.
 */
function toOpenApi (schema: TSchema, components: Record<string, Json>): Json {
  const walk = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(walk)
    if (!node || typeof node !== 'object') return node
    const { $ref, $id, ...rest } = node as Json
    if (typeof $ref === 'string' && !$ref.startsWith('#')) {
      const name = $ref.replace(/#$/, '')
      if (!components[name]) throw new Error(`an action schema refers to ${name}, which is not a registered schema`)
      return { ...walkAll(rest), $ref: `#/components/schemas/${name}` }
    }
    if (typeof $id === 'string') {
      components[$id] ??= walkAll(rest)
      return { $ref: `#/components/schemas/${$id}` }
    }
    return walkAll(node as Json)
  }
  const walkAll = (node: Json): Json => Object.fromEntries(Object.entries(node).map(([k, v]) => [k, walk(v)]))
  return walk(JSON.parse(JSON.stringify(schema))) as Json
}

function resolve (schema: Json, components: Record<string, Json>): Json {
  const ref = typeof schema.$ref === 'string' ? /^#\/components\/schemas\/(.+)$/.exec(schema.$ref) : null
  return ref ? components[ref[1]] ?? schema : schema
}

function pascal (name: string): string {
  return name.split(/[^A-Za-z0-9]+/).filter(Boolean).map(w => w.charAt(0).toUpperCase() + w.slice(1)).join('')
}

function anyOf (schemas: Json[]): Json {
  const distinct = [...new Map(schemas.map(s => [JSON.stringify(s), s])).values()]
  return distinct.length === 1 ? distinct[0] : { anyOf: distinct }
}

/** Adds each registered action's own operation next to its registry's generic one (in place). */
export function documentActions<D> (document: D, registries: ActionRegistry[]): D {
  const doc = document as unknown as Document
  const components = doc.components.schemas
  for (const registry of registries) {
    const genericPath = genericActionPath(registry.resource)
    const generic = doc.paths[genericPath]?.post
    if (!generic) continue
    const actions = registry.entries()
    if (actions.length === 0) continue
    const errorResponses = Object.fromEntries(Object.entries(generic.responses).filter(([code]) => /^[45]/.test(code)))
    const commonParams = (generic.parameters ?? []).filter(p => p.in !== 'query')
    const added: Document['paths'] = {}
    const bodies: Json[] = []
    const results: Json[] = []
    for (const [name, action] of actions) {
      const op = actionOperation(registry, name, action, generic, components)
      op.parameters = commonParams
      op.responses = { ...op.responses, ...errorResponses }
      added[actionPath(registry.resource, name)] = { post: op }
      const body = (op.requestBody as { content: Record<string, { schema: Json }> } | undefined)?.content[JSON_TYPE].schema
      if (body) bodies.push(body)
      const result = (op.responses[String(action.status ?? 202)] as { content?: Record<string, { schema: Json }> }).content?.[JSON_TYPE].schema
      if (result) results.push(result)
    }

    // listed right after the generic operation
    doc.paths = Object.fromEntries(Object.entries(doc.paths).flatMap(([p, item]) => p === genericPath ? [[p, item], ...Object.entries(added)] : [[p, item]]))

    // the generic operation: `do` names the registered actions; bodies and results are any of theirs
    const names = actions.map(([name]) => name)
    for (const p of generic.parameters ?? []) {
      if (p.in === 'query' && p.name === 'do') p.schema = { ...p.schema, enum: names }
    }
    generic.description = [generic.description, `Each action is also described as an operation of its own, at the path ${genericPath}?do=<action> (the same URL on the wire), with its own body and result; a generated client types those. Use this operation to send ?avoid=.`].filter(Boolean).join(' ')
    if (bodies.length) generic.requestBody = { required: false, content: { [JSON_TYPE]: { schema: anyOf(bodies) } } }
    const success = Object.keys(generic.responses).find(code => /^2/.test(code))
    if (success && results.length === actions.length) {
      generic.responses[success] = { description: 'The action\'s result (see the operation of each action)', content: { [JSON_TYPE]: { schema: anyOf(results) } } }
    }
  }
  return document
}

function actionOperation (registry: ActionRegistry, name: string, action: Action, generic: Operation, components: Record<string, Json>): Operation {
  const op: Operation = {
    operationId: `${generic.operationId}${pascal(name)}`,
    summary: `?do=${name}: ${action.summary}`,
    tags: generic.tags,
    description: `Sent as POST ${genericActionPath(registry.resource)}?do=${name}; the query string is part of this path. (?avoid= goes through the generic operation.)`,
    responses: {}
  }
  const documented = action.documentedBody ?? action.body
  if (documented) {
    const schema = toOpenApi(documented, components)
    const required = ((resolve(schema, components).required as unknown[] | undefined) ?? []).length > 0
    op.requestBody = { required, content: { [JSON_TYPE]: { schema } } }
  }
  const status = String(action.status ?? 202)
  op.responses[status] = action.result
    ? { description: action.summary, content: { [JSON_TYPE]: { schema: toOpenApi(action.result, components) } } }
    : { description: action.summary, content: { [JSON_TYPE]: { schema: { description: 'Not described' } } } }
  return op
}
