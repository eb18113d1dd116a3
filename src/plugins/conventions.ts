// Wire conventions every route shares: lenient JSON bodies, X-REQUEST-ID, Accept negotiation.
import { isUtf8 } from 'node:buffer'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import Negotiator from 'negotiator'
import { errors } from '../http/errors.ts'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Media types a route can produce besides JSON, for Accept negotiation. */
    produces?: string[]
  }
}

/**
 * Whether the Accept header admits JSON (errors are JSON on every route) or one of the route's own
 * types. Parsed by negotiator (as Express's `accepts`): q-values count, so `application/json;q=0`
 * refuses JSON (RFC 9110 §12.5.1), and the most specific range decides (a wildcard beside that
 * refuses JSON too). Parameters other than q must match what is sent: UTF-8 (`charset=latin1` is 406).
 */
function acceptable (accept: string | undefined, produces: string[]): boolean {
  if (accept === undefined || accept.trim() === '') return true
  const types = ['application/json', ...produces].flatMap(type => [type, `${type}; charset=utf-8`])
  return new Negotiator({ headers: { accept } }).mediaTypes(types).length > 0
}

/** A Content-Type's charset, lower-cased; undefined when it names none (JSON is UTF-8, RFC 8259). */
function charsetOf (type: string | undefined): string | undefined {
  const m = /;\s*charset\s*=\s*("?)([^";\s]*)\1/i.exec(type ?? '')
  return m ? m[2].toLowerCase() : undefined
}

export default fp(async (app: FastifyInstance) => {
  const defaultJson = app.getDefaultJsonParser('error', 'error')
  // Action POSTs arrive with `Content-Type: application/json` and no body at all (Go SDK), or `null`.
  // The body is read as bytes and decoded here: a string parser decodes bytes that are not UTF-8
  // as U+FFFD, and a name of those was stored as sent
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    const charset = charsetOf(request.headers['content-type'])
    if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') return done(errors.unsupportedMediaType(request.headers['content-type']))
    const bytes = typeof body === 'string' ? Buffer.from(body) : body
    if (!isUtf8(bytes)) return done(errors.malformedJson('it is not UTF-8'))
    const text = bytes.toString('utf8')
    if (text.trim() === '' || text.trim() === 'null') return done(null, {})
    defaultJson(request, text, done)
  })

  app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    reply.header('X-REQUEST-ID', request.id)
    if (request.routeOptions.url?.startsWith('/api/') && (request.query as { format?: string })?.format === undefined &&
        !acceptable(request.headers.accept, request.routeOptions.config?.produces ?? [])) {
      throw errors.notAcceptable()
    }
  })
}, { name: 'conventions' })
