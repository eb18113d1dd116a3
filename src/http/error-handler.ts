// Turns every error (ours, Fastify's, ajv's, unexpected ones) into the CloudSigma error array.
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import FindMyWay, { type HTTPMethod } from 'find-my-way'
import { DomainError, type DomainErrorCode } from '../domain/errors.ts'
import { isStorageError } from '../storage/index.ts'
import { ApiError, errors, type ErrorType } from './errors.ts'
import { databaseFailure, referenceGone } from './database-errors.ts'

// the one mapping of domain error codes to statuses and CloudSigma error types (decisions.md)
const DOMAIN: Record<DomainErrorCode, [number, ErrorType]> = {
  validation: [400, 'validation'],
  wrong_state: [400, 'validation'],
  notexist: [404, 'notexist'],
  permission: [403, 'permission'],
  gone: [410, 'notexist'],
  too_large: [413, 'validation'],
  range: [416, 'validation'],
  busy: [503, 'concurrency']
}

export function fromDomain (error: DomainError): ApiError {
  const [status, type] = DOMAIN[error.code]
  return new ApiError(status, type, error.message, error.point)
}

interface AjvError { instancePath?: string, schemaPath?: string, keyword?: string, params?: Record<string, unknown>, message?: string, schema?: unknown }

/** The field an ajv error is about: the missing property, or the last named segment of its path. */
export function errorPointOf (err: AjvError): string | null {
  if (err.keyword === 'required' && typeof err.params?.missingProperty === 'string') return err.params.missingProperty
  if (err.keyword === 'additionalProperties' && typeof err.params?.additionalProperty === 'string') return err.params.additionalProperty
  const segments = (err.instancePath ?? '').split('/').filter(s => s !== '' && !/^\d+$/.test(s) && s !== 'objects')
  // the bulk list itself (too few or too many objects)
  return segments.at(-1) ?? (err.instancePath === '/objects' ? 'objects' : null)
}

type SchemaLike = Record<string, unknown>

/** One branch of a union in words: `null`, `an integer from 1 to 2147483647`, `"disk"`. */
function describeSchema (schema: SchemaLike): string {
  if ('const' in schema) return JSON.stringify(schema.const)
  if (Array.isArray(schema.enum)) return `one of ${schema.enum.map(v => JSON.stringify(v)).join(', ')}`
  if (Array.isArray(schema.anyOf)) return (schema.anyOf as SchemaLike[]).map(describeSchema).join(' or ')
  const { minimum: min, maximum: max } = schema
  const range = typeof min === 'number' && typeof max === 'number'
    ? ` from ${min} to ${max}`
    : typeof min === 'number' ? ` of at least ${min}` : typeof max === 'number' ? ` of at most ${max}` : ''
  switch (schema.type) {
    case 'null': return 'null'
    case 'integer': return `an integer${range}`
    case 'number': return `a number${range}`
    case 'string': return 'a string'
    case 'boolean': return 'true or false'
    case 'array': return 'a list'
    default: return 'an object'
  }
}

/**
 * What a validation error says, and about which field. A union (`null` or a bounded integer, say)
 * that no branch matched is described whole ("must be null or an integer from 1 to 2147483647"):
 * ajv's first error is the first branch's ("must be null"), which misleads. A value whose branch
 * was found but failed inside (an object with a bad field) is explained by that branch's error.
 */
function explain (list: AjvError[]): { point: string | null, message: string } {
  const union = list.findLast(e => e.keyword === 'anyOf')
  if (union === undefined) return { point: errorPointOf(list[0] ?? {}), message: list[0]?.message ?? 'invalid value' }
  const path = union.instancePath ?? ''
  const branches = list.filter(e => e !== union && (e.schemaPath ?? '').startsWith(`${union.schemaPath ?? ''}/`))
  const inside = branches.filter(e => (e.instancePath ?? '').length > path.length || e.keyword === 'required' || e.keyword === 'additionalProperties')
  if (inside.length > 0) return explain(inside)
  const message = Array.isArray(union.schema) ? `must be ${(union.schema as SchemaLike[]).map(describeSchema).join(' or ')}` : (union.message ?? 'invalid value')
  return { point: errorPointOf(union), message }
}

function fromValidation (error: FastifyError): ApiError {
  const list = (error.validation ?? []) as AjvError[]
  const { point, message: why } = explain(list)
  const where = error.validationContext === 'querystring' ? 'query parameter' : 'field'
  const message = point ? `Invalid ${where} ${point}: ${why}` : (list[0]?.message ?? error.message)
  return new ApiError(400, 'validation', message, point)
}

/** The ApiError an error answers as; `request`, when there is one, names what it sent (a 415's type). */
export function toApiError (error: FastifyError | Error, request?: FastifyRequest): ApiError {
  if (error instanceof ApiError) return error
  if (error instanceof DomainError) return fromDomain(error)
  const fe = error as FastifyError
  if (fe.validation) return fromValidation(fe)
  switch (fe.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return errors.malformedJson()
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError(413, 'validation', 'Request body is too large')
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      // Fastify's message names no type: the request's header does
      return errors.unsupportedMediaType(request?.headers['content-type'])
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new ApiError(400, 'validation', 'Request body size did not match Content-Length')
    case 'FST_REQ_FILE_TOO_LARGE':
    case 'FST_FILES_LIMIT':
    case 'FST_PARTS_LIMIT':
    case 'FST_FIELDS_LIMIT':
      return new ApiError(413, 'validation', fe.message)
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
      return new ApiError(400, 'validation', 'The request is not multipart/form-data')
  }
  if (error instanceof SyntaxError) return errors.malformedJson()
  // the client hung up mid-body (Node's 'aborted', ECONNRESET with no system call behind it): its
  // request, not the service, failed (a socket error of the database has a syscall)
  if (fe.code === 'ECONNRESET' && (error as NodeJS.ErrnoException).syscall === undefined) {
    return new ApiError(400, 'validation', 'The connection ended before the request body did')
  }
  const unavailable = databaseFailure(error)
  if (unavailable) return unavailable
  const gone = referenceGone(error)
  if (gone) return gone
  // the one place a storage condition becomes a status: an unreachable backend is worth a retry
  if (isStorageError(error, 'UNAVAILABLE')) return errors.storageUnavailable()
  const status = fe.statusCode ?? 500
  if (status >= 400 && status < 500) {
    if (status === 404) return fromDomain(errors.notFound('Resource'))
    if (status === 401) return errors.unauthorized()
    return new ApiError(status, 'validation', fe.message)
  }
  return errors.internal()
}

export function sendError (reply: FastifyReply, error: ApiError): FastifyReply {
  return reply.code(error.statusCode).headers(error.headers).type('application/json; charset=utf-8').send([error.toJSON()])
}

/** The service's router options (serverOptions), which the method lookup below matches paths with too. */
export const ROUTER_OPTIONS = { ignoreTrailingSlash: true, maxParamLength: 200 }

const METHODS: HTTPMethod[] = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']

/**
 * The methods each route path takes, in a router of the kind Fastify's is (find-my-way), filled
 * by an onRoute hook: a request Fastify's router did not match is looked up here for its other
 * methods. Register before the routes.
 */
function methodsByPath (app: FastifyInstance): { allowedOn: (path: string, except: string) => string[], staticOn: (path: string) => string[], staticSegments: Set<string> } {
  const paths = FindMyWay(ROUTER_OPTIONS)
  // the routes with no parameter: `/drives/detail/` is one of them, not a drive called "detail"
  const statics = FindMyWay(ROUTER_OPTIONS)
  // their path segments: a parameter holding none of them (a uuid) cannot be one of their paths
  const staticSegments = new Set<string>()
  app.addHook('onRoute', (route) => {
    const isStatic = !/[:*]/.test(route.url)
    if (isStatic) for (const segment of route.url.split('/')) staticSegments.add(segment)
    for (const m of [route.method].flat()) {
      const method = m.toUpperCase() as HTTPMethod
      if (!paths.hasRoute(method, route.url)) paths.on(method, route.url, () => {})
      if (isStatic && !statics.hasRoute(method, route.url)) statics.on(method, route.url, () => {})
    }
  })
  const staticOn = (path: string): string[] => METHODS.filter(m => statics.find(m, path) !== null)
  return {
    staticSegments,
    // a path of a static route takes that route's methods only (PUT /drives/{uuid}/ is not one of /drives/detail/'s)
    allowedOn: (path, except) => {
      const own = staticOn(path)
      return (own.length > 0 ? own : METHODS.filter(m => paths.find(m, path) !== null)).filter(m => m !== except)
    },
    staticOn
  }
}

export function installErrorHandler (app: FastifyInstance): void {
  const { allowedOn, staticOn, staticSegments } = methodsByPath(app)
  // `DELETE /drives/detail/` reaches the route of `/drives/{uuid}/`, whose uuid check answered 400
  // "Invalid field uuid": it is a path the API has (GET) asked with a method it does not take, so a
  // 405 as below; decided here, before authentication, as the 404 and 405 are
  app.addHook('onRequest', async (request) => {
    if (!request.routeOptions.url?.includes(':')) return
    // the router's lookups only when a parameter holds a static route's segment (`detail`)
    if (!Object.values(request.params as Record<string, unknown>).some(v => typeof v === 'string' && v.split('/').some(s => staticSegments.has(s)))) return
    const own = staticOn(request.url.split('?')[0])
    if (own.length > 0 && !own.includes(request.method)) throw errors.methodNotAllowed(request.method, own)
  })
  app.setErrorHandler((error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const apiError = toApiError(error, request)
    if (apiError.statusCode === 503) {
      // busy, overloaded, a dependency away for now: the client is told to retry; not a fault here
      request.log.warn({ err: error, status: 503 }, 'request refused for now')
    } else if (apiError.statusCode >= 500) {
      // the real cause goes to the log only; the client sees a generic message
      request.log.error({ err: error }, 'request failed')
    } else {
      request.log.info({ error: apiError.toJSON(), status: apiError.statusCode }, 'request rejected')
    }
    return sendError(reply, apiError)
  })
  app.setNotFoundHandler((request, reply) => {
    // a path the API has, asked with a method it does not take (DELETE /jobs/{uuid}/): 405 with
    // Allow (spec §1.4), before authentication as the 404 is; the answer depends on the path's
    // shape only, never on an object
    const path = request.url.split('?')[0]
    const allowed = allowedOn(path, request.method)
    // OPTIONS on a path the API has answers the methods it takes (spec §1.1)
    if (request.method === 'OPTIONS' && allowed.length > 0) return reply.code(204).header('allow', allowed.join(', ')).send()
    if (allowed.length > 0) return sendError(reply, errors.methodNotAllowed(request.method, allowed))
    return sendError(reply, fromDomain(errors.notFound('Resource')))
  })
}
