// Live change events: server-sent events at /api/2.0/jobs/events/ (resumable with Last-Event-ID),
// the CloudSigma websocket (/websocket, /2.0/websocket, /api/2.0/websocket) and the async_auth
// cookie that opens it. Registered at the root: the websocket paths are outside /api/2.0.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Duplex } from 'node:stream'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import websocket from '@fastify/websocket'
import type { FastifyRequest } from 'fastify'
import { Type } from 'typebox'
import { ApiError, errors } from '../../http/errors.ts'
import type { AuthAccount } from '../../plugins/auth.ts'
import { errorResponses } from '../../http/schemas.ts'
import { JobEventsQuery } from './schemas.ts'
import { FrameFilter, type ChangeEvent, type Frame } from '../../engine/events.ts'

const COOKIE = 'async_auth'
const COOKIE_TTL_S = 120
const SECRET_KEY = 'async_auth_secret'
const PING_MS = 15_000
const INT8_MAX = 9223372036854775807n

function cookieValue (header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      // a value that is not valid percent-encoding is no cookie (401 or Basic auth), not a URIError
      try {
        return decodeURIComponent(part.slice(eq + 1).trim())
      } catch {
        return undefined
      }
    }
  }
  return undefined
}

const events: FastifyPluginAsyncTypebox = async (app) => {
  // on close, @fastify/websocket sends every websocket client a close frame
  await app.register(websocket, { options: { maxPayload: 64 * 1024 } })
  // a handshake ws refuses (a bad Sec-WebSocket-Key or -Version): ws's own answer is a text/html 400
  app.websocketServer.on('wsClientError', (err: Error, socket: Duplex) => {
    if (!socket.writable) return socket.destroy()
    const point = /Sec-WebSocket-\w+|Upgrade/.exec(err.message)?.[0] ?? null
    const version = point === 'Sec-WebSocket-Version'
    const apiError = new ApiError(400, 'validation', `Not a valid websocket handshake: ${err.message}`, point)
    const body = JSON.stringify([apiError.toJSON()])
    socket.once('finish', () => socket.destroy())
    socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\n' +
      `${version ? 'Sec-WebSocket-Version: 13, 8\r\n' : ''}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
  })
  // open SSE streams end with a `shutdown` frame when the app closes, so a stop does not wait on them
  const streams = new Set<() => void>()
  app.addHook('preClose', async () => { for (const end of streams) end() })

  // one HMAC key for every process sharing the database, created by whichever asks first
  let secret: Buffer | undefined
  const getSecret = async (): Promise<Buffer> => {
    if (secret) return secret
    await app.prisma.setting.createMany({ data: [{ key: SECRET_KEY, value: randomBytes(32).toString('hex') }], skipDuplicates: true })
    const row = await app.prisma.setting.findUniqueOrThrow({ where: { key: SECRET_KEY } })
    secret = Buffer.from(row.value, 'hex')
    return secret
  }

  // token: base64(account uuid)|unix seconds|hex HMAC-SHA256 of the first two parts (CloudSigma's shape)
  const sign = async (accountId: string, ts: number): Promise<string> => {
    const head = `${Buffer.from(accountId).toString('base64')}|${ts}`
    return `${head}|${createHmac('sha256', await getSecret()).update(head).digest('hex')}`
  }

  const verify = async (token: string | undefined): Promise<string | undefined> => {
    const parts = token?.split('|')
    if (!parts || parts.length !== 3) return undefined
    const ts = Number(parts[1])
    if (!Number.isSafeInteger(ts) || Date.now() / 1000 - ts > COOKIE_TTL_S || ts - Date.now() / 1000 > 5) return undefined
    const expected = Buffer.from((await sign(Buffer.from(parts[0], 'base64').toString('utf8'), ts)).split('|')[2], 'hex')
    const given = Buffer.from(parts[2], 'hex')
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined
    return Buffer.from(parts[0], 'base64').toString('utf8')
  }

  const websocketAccount = async (request: FastifyRequest): Promise<AuthAccount | undefined> => {
    const id = await verify(cookieValue(request.headers.cookie, COOKIE))
    if (id) {
      const row = await app.prisma.account.findUnique({ where: { id } })
      if (row) return { id: row.id, email: row.email, cloneNaming: row.cloneNaming }
    }
    return app.authenticateBasic(request.headers.authorization)
  }

  app.post('/api/2.0/accounts/action/', {
    schema: {
      tags: ['events'],
      summary: 'authenticate_asynchronous: a 2-minute async_auth cookie that opens the websocket',
      querystring: Type.Object({ do: Type.String({ enum: ['authenticate_asynchronous'] }) }),
      response: { 200: Type.Object({}), ...errorResponses() }
    }
  }, async (request, reply) => {
    const token = await sign(request.account.id, Math.floor(Date.now() / 1000))
    const expires = new Date(Date.now() + COOKIE_TTL_S * 1000).toUTCString()
    reply.header('set-cookie', `${COOKIE}=${token}; expires=${expires}; Max-Age=${COOKIE_TTL_S}; Path=/; HttpOnly; SameSite=Lax`)
    return {}
  })

  const wsRoute = (url: string) => app.route({
    method: 'GET',
    url,
    config: { auth: false },
    schema: { hide: true } as never,
    preValidation: async (request) => {
      const account = await websocketAccount(request)
      if (!account) throw errors.unauthorized()
      request.account = account
    },
    // a request without Upgrade: websocket (@fastify/websocket's own answer is an empty 404)
    handler: async () => {
      throw new ApiError(426, 'validation', 'This is a websocket endpoint: send the request with Connection: Upgrade and Upgrade: websocket', null, { upgrade: 'websocket' })
    },
    wsHandler: (socket, request) => {
      const filter = new FrameFilter()
      const unsubscribe = app.events.subscribe(request.account.id, (_event, frame) => {
        if (socket.readyState === socket.OPEN && filter.fresh(frame)) socket.send(JSON.stringify(frame))
      })
      const ping = setInterval(() => { if (socket.readyState === socket.OPEN) socket.ping() }, PING_MS)
      socket.on('close', () => { unsubscribe(); clearInterval(ping) })
      // frames only go server → client; anything a client sends is ignored
      socket.on('message', () => {})
    }
  })
  for (const url of ['/websocket', '/2.0/websocket', '/api/2.0/websocket']) wsRoute(url)

  app.get('/api/2.0/jobs/events/', {
    config: { produces: ['text/event-stream'] },
    // frames leave as they happen: a gzip stream would hold them back (the reply is hijacked anyway)
    compress: false,
    schema: {
      tags: ['events'],
      summary: 'Server-sent events: every change of this account\'s jobs, drives and servers',
      description: 'Frames are `id: <event id>`, `event: <resource_type>`, `data: {change, resource_type, resource_uri, object}`; ' +
        '`change` is `added`, `changed` or `removed` (then `object` is only `{uuid, resource_uri}`). A frame that would repeat the object of the previous ' +
        'frame of the same object on this stream is not sent. ' +
        'Resume with the Last-Event-ID header (or last_event_id=). `job=` keeps only the frames of one job.',
      querystring: JobEventsQuery,
      response: {
        200: {
          description: 'A text/event-stream of change frames',
          content: { 'text/event-stream': { schema: { type: 'string', description: 'id:, event: and data: lines per frame' } } }
        },
        ...errorResponses(404)
      }
    }
  }, async (request, reply) => {
    const ownerId = request.account.id
    const { job } = request.query
    if (job && !await app.prisma.job.findFirst({ where: { id: job, ownerId }, select: { id: true } })) throw errors.notFound('Job', 'job')
    const header = request.headers['last-event-id']
    const rawLast = request.query.last_event_id ?? (typeof header === 'string' && /^\d+$/.test(header.trim()) ? header.trim() : undefined)
    // event ids are int8: a larger one cannot be replayed after, so it is refused before the stream opens
    if (rawLast !== undefined && BigInt(rawLast) > INT8_MAX) {
      throw errors.validation(`The event id must be at most ${INT8_MAX}`, request.query.last_event_id !== undefined ? 'last_event_id' : 'Last-Event-ID')
    }
    const wanted = (e: ChangeEvent) => !job || (e.resourceType === 'jobs' && e.resourceId === job)

    reply.hijack()
    const res = reply.raw
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
      'x-request-id': request.id
    })
    const filter = new FrameFilter()
    const write = (event: ChangeEvent, frame: Frame) => {
      if (!filter.fresh(frame)) return
      res.write(`id: ${event.id}\nevent: ${frame.resource_type}\ndata: ${JSON.stringify(frame)}\n\n`)
    }
    res.write('retry: 2000\n: connected\n\n')

    // live frames are buffered while stored ones are replayed, then de-duplicated against them
    let buffer: Array<[ChangeEvent, Frame]> | undefined = []
    const replayed = new Set<string>()
    const unsubscribe = app.events.subscribe(ownerId, (event, frame) => {
      if (!wanted(event)) return
      if (buffer) buffer.push([event, frame])
      else write(event, frame)
    })
    const ping = setInterval(() => res.write(': ping\n\n'), PING_MS)
    let closed = false
    const end = () => { res.end('event: shutdown\ndata: {"reason":"server shutting down"}\n\n') }
    streams.add(end)
    request.raw.on('close', () => { closed = true; unsubscribe(); clearInterval(ping); streams.delete(end) })

    try {
      if (rawLast !== undefined) {
        let after = BigInt(rawLast)
        for (;;) {
          const page = await app.events.since(ownerId, after, 500, job)
          for (const e of page) {
            if (closed) return
            if (!wanted(e)) continue
            write(e, await app.events.frameFor(e))
            replayed.add(e.id)
          }
          if (page.length < 500) break
          after = BigInt(page.at(-1)!.id)
        }
      }
    } catch (err) {
      request.log.warn({ err }, 'replaying events failed')
    }
    const pending = buffer
    buffer = undefined
    for (const [e, f] of pending) if (!replayed.has(e.id)) write(e, f)
  })
}

export default events
