// Idempotency-Key (AIP-155, Stripe semantics) on the POSTs that create objects or start jobs.
// The first request with a key claims a row (account, method, path, key) holding a fingerprint of
// the request; its answer (status, body, content-type, Location) is stored when it is sent. A retry
// with the same key and the same request within 24 hours gets that answer again, marked
// `Idempotent-Replayed: true`, and nothing is done a second time. Rules (decisions.md):
// - another request under the same key: 400 `validation` at `Idempotency-Key`;
// - a retry while the first is still running: 503 `concurrency` with `Retry-After: 1`;
// - 5xx, 409 and 429 answers are not kept (the key is released), so a retry does the work; any
//   other answer, 4xx included, is replayed as it was;
// - keys live 24 hours; a supervised purge (croner, never overlapping) deletes them in batches.
import { createHash } from 'node:crypto'
import stableStringify from 'safe-stable-stringify'
import { Cron } from 'croner'
import type { FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import fp from 'fastify-plugin'
import { Type } from 'typebox'
import { ApiError, errors } from '../http/errors.ts'

export const IDEMPOTENCY_HEADER = 'idempotency-key'
export const KEY_TTL_MS = 24 * 3_600_000
// a claim whose request never answered (process died mid-request) is given up after this long
const ABANDONED_MS = 3_600_000
const KEY = /^[\x20-\x7e]{1,255}$/

/** How often a header was sent: Node joins repeated unknown headers into one `a, b` string. */
function headerCount (rawHeaders: string[], name: string): number {
  let n = 0
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i].toLowerCase() === name) n++
  return n
}

const KEPT_HEADERS = ['content-type', 'location'] as const

/** POST routes (as registered, after the prefix) that create objects or start jobs. */
export const IDEMPOTENT_ROUTES = new Set([
  '/api/2.0/drives/',
  '/api/2.0/drives/:uuid/action/',
  '/api/2.0/servers/',
  '/api/2.0/servers/:uuid/action/',
  '/api/2.0/drives/upload/',
  '/api/2.0/drives/upload/:name',
  '/api/2.0/initupload/',
  '/api/2.0/_upload/'
])

interface Claim { ownerId: string, method: string, path: string, key: string, done: boolean }

declare module 'fastify' {
  interface FastifyRequest {
    idempotencyClaim: Claim | null
  }
  interface FastifyInstance {
    /** Deletes idempotency keys older than 24 hours (the schedule calls it too); returns how many. */
    purgeIdempotencyKeys: (now?: () => Date) => Promise<number>
  }
}

function appliesTo (method: string, url: string | undefined): boolean {
  if (url === undefined || !IDEMPOTENT_ROUTES.has(url)) return false
  // the raw upload is the same operation as POST when curl -T sends it as PUT
  return method === 'POST' || (method === 'PUT' && url.startsWith('/api/2.0/drives/upload/'))
}

/**
 * What makes two requests "the same": the query string and the JSON body; for streamed bodies
 * (raw and multipart uploads) their media type (without the multipart boundary) and length.
 */
function fingerprint (request: FastifyRequest): string {
  const q = request.url.indexOf('?')
  // the parameters in a fixed order, and the body's keys sorted: the same request written another
  // way (`{"size": 1, "name": "a"}` after `{"name": "a", "size": 1}`) is the same request
  const query = new URLSearchParams(q === -1 ? '' : request.url.slice(q + 1))
  query.sort()
  const body = request.body
  const streamed = body === undefined || body === null || typeof (body as { pipe?: unknown }).pipe === 'function'
  const content = streamed
    ? `${String(request.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase()} ${String(request.headers['content-length'] ?? '')}`
    : stableStringify(body)
  return createHash('sha256').update(`${query.toString()}\n${streamed ? 's' : 'j'}\n${String(content)}`).digest('hex')
}

/** The route's path as the key's scope: lower case, with its trailing slash (`/drives` and `/drives/` are one route, §1.1). */
function pathOf (request: FastifyRequest): string {
  const q = request.url.indexOf('?')
  const path = (q === -1 ? request.url : request.url.slice(0, q)).toLowerCase()
  return path.endsWith('/') ? path : `${path}/`
}

export default fp(async (app) => {
  const prisma = app.prisma
  app.decorateRequest('idempotencyClaim', null)

  // the header is documented (and length-checked) on every operation it applies to
  app.addHook('onRoute', (route: RouteOptions) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method]
    if (!methods.some(m => appliesTo(m, route.url))) return
    const schema = (route.schema ??= {}) as { headers?: unknown, response?: Record<string, unknown> }
    // a retry while the first request runs answers 503 concurrency (the error schema of 400)
    if (schema.response && schema.response[503] === undefined && schema.response[400] !== undefined) schema.response[503] = schema.response[400]
    if (schema.headers) return
    schema.headers = Type.Object({
      [IDEMPOTENCY_HEADER]: Type.Optional(Type.String({
        minLength: 1,
        maxLength: 255,
        description: 'Makes a retry safe: a repeat of this request with the same key within 24 h answers the first answer again (Idempotent-Replayed: true) without doing the work twice; the same key with another request is 400.'
      }))
    })
  })

  const release = async (claim: Claim): Promise<void> => {
    await prisma.idempotencyKey.deleteMany({ where: { ownerId: claim.ownerId, method: claim.method, path: claim.path, key: claim.key, statusCode: null } })
  }

  // preValidation: the account is known (onRequest) and the body parsed but not yet coerced
  app.addHook('preValidation', async (request: FastifyRequest, reply: FastifyReply) => {
    const raw = request.headers[IDEMPOTENCY_HEADER]
    if (raw === undefined || !request.account || !appliesTo(request.method, request.routeOptions.url)) return
    const key = Array.isArray(raw) ? raw[0] : raw
    if (Array.isArray(raw) || headerCount(request.raw.rawHeaders, IDEMPOTENCY_HEADER) > 1 || !KEY.test(key)) throw errors.validation('Idempotency-Key must be one header of 1 to 255 printable ASCII characters', 'Idempotency-Key')
    const claim: Claim = { ownerId: request.account.id, method: request.method, path: pathOf(request), key, done: false }
    const id = { ownerId: claim.ownerId, method: claim.method, path: claim.path, key }
    const print = fingerprint(request)
    for (let attempt = 0; attempt < 3; attempt++) {
      const inserted = await prisma.$executeRaw`
        INSERT INTO idempotency_keys (owner_id, method, path, key, fingerprint)
        VALUES (${id.ownerId}::uuid, ${id.method}, ${id.path}, ${id.key}, ${print})
        ON CONFLICT DO NOTHING`
      if (inserted === 1) {
        request.idempotencyClaim = claim
        return
      }
      const row = await prisma.idempotencyKey.findUnique({ where: { ownerId_method_path_key: id } })
      if (!row) continue // released meanwhile: claim it again
      const age = Date.now() - row.createdAt.getTime()
      if (age >= KEY_TTL_MS || (row.statusCode === null && age >= ABANDONED_MS)) {
        // conditional, so a key that another request has just renewed is not deleted
        const stale = row.statusCode === null ? ABANDONED_MS : KEY_TTL_MS
        await prisma.idempotencyKey.deleteMany({ where: { ...id, createdAt: { lt: new Date(Date.now() - stale + 1) } } })
        continue
      }
      if (row.fingerprint !== print) {
        throw errors.validation('This Idempotency-Key was used for another request; use a new key for a new request', 'Idempotency-Key')
      }
      if (row.statusCode === null) {
        throw new ApiError(503, 'concurrency', 'A request with this Idempotency-Key is still being answered; retry shortly', 'Idempotency-Key', { 'retry-after': '1' })
      }
      const headers = (row.headers ?? {}) as Record<string, string>
      for (const [name, value] of Object.entries(headers)) reply.header(name, value)
      reply.header('idempotent-replayed', 'true')
      return reply.code(row.statusCode).send(row.body === null ? '' : Buffer.from(row.body))
    }
    throw new ApiError(503, 'concurrency', 'A request with this Idempotency-Key is still being answered; retry shortly', 'Idempotency-Key', { 'retry-after': '1' })
  })

  app.addHook('onSend', async (request, reply, payload) => {
    const claim = request.idempotencyClaim
    if (!claim || claim.done) return payload
    claim.done = true
    const status = reply.statusCode
    const keep = status < 500 && status !== 409 && status !== 429 &&
      (typeof payload === 'string' || Buffer.isBuffer(payload) || payload === null || payload === undefined)
    if (!keep) {
      await release(claim)
      return payload
    }
    const headers: Record<string, string> = {}
    for (const name of KEPT_HEADERS) {
      const value = reply.getHeader(name)
      if (value !== undefined) headers[name] = String(value)
    }
    const body = payload === null || payload === undefined ? null : Buffer.isBuffer(payload) ? payload : Buffer.from(payload as string)
    await prisma.idempotencyKey.updateMany({
      where: { ownerId: claim.ownerId, method: claim.method, path: claim.path, key: claim.key, statusCode: null },
      data: { statusCode: status, headers, body: body === null ? null : new Uint8Array(body) }
    })
    return payload
  })

  // a request that never reached onSend (client gone) gives its key back
  app.addHook('onResponse', async (request) => {
    const claim = request.idempotencyClaim
    if (claim && !claim.done) await release(claim)
  })
  app.addHook('onRequestAbort', async (request) => {
    const claim = request.idempotencyClaim
    if (claim && !claim.done) {
      claim.done = true
      await release(claim)
    }
  })

  const purge = async (now: () => Date = () => new Date()): Promise<number> => {
    const cutoff = new Date(now().getTime() - KEY_TTL_MS)
    let total = 0
    for (;;) {
      const n = await prisma.$executeRaw`
        DELETE FROM idempotency_keys WHERE ctid IN (
          SELECT ctid FROM idempotency_keys WHERE created_at < ${cutoff} LIMIT 5000)`
      total += n
      if (n < 5000) break
    }
    if (total > 0) app.log.info({ keys: total }, `purged ${total} idempotency keys`)
    return total
  }
  app.decorate('purgeIdempotencyKeys', purge)

  let cron: Cron | undefined
  app.addHook('onReady', async () => {
    // protect: a run still going when the next one is due is not overlapped
    cron = new Cron(app.config.purgeCron, { protect: true }, async () => {
      await purge().catch(err => app.log.error({ err }, 'idempotency key purge failed'))
    })
  })
  app.addHook('preClose', async () => { cron?.stop() })
}, { name: 'idempotency', dependencies: ['prisma', 'auth'] })
