// HTTP Basic authentication (email + password) for every /api/2.0/ route, except routes that
// declare `config: { auth: false }` (token-carrying upload and download links).
import { createHmac, randomBytes } from 'node:crypto'
import type { FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { errors } from '../http/errors.ts'
import { isStorableText } from '../http/text.ts'
import { verifyPassword } from '../services/accounts.ts'

export interface AuthAccount {
  id: string
  email: string
  cloneNaming: string
}

declare module 'fastify' {
  interface FastifyRequest {
    account: AuthAccount
  }
  interface FastifyContextConfig {
    /** false for routes that carry their own credentials (tokens in the URL). */
    auth?: boolean
  }
  interface FastifyInstance {
    /** Verifies Basic credentials; undefined when they are missing or wrong. */
    authenticateBasic: (header: string | undefined) => Promise<AuthAccount | undefined>
  }
}

// scrypt costs ~50 ms; a verified credential is remembered briefly, keyed by a keyed hash so the
// cache never holds passwords. Password changes take effect within the TTL.
const CACHE_TTL_MS = 60_000
const CACHE_MAX = 10_000

export function parseBasic (header: string | undefined): { email: string, password: string } | undefined {
  if (!header) return undefined
  const m = /^Basic\s+([A-Za-z0-9+/=._~-]+)\s*$/i.exec(header)
  if (!m) return undefined
  const decoded = Buffer.from(m[1], 'base64').toString('utf8')
  // the database cannot compare a NUL byte: such credentials cannot be right
  if (!isStorableText(decoded)) return undefined
  const colon = decoded.indexOf(':')
  if (colon < 0) return undefined
  return { email: decoded.slice(0, colon).trim().toLowerCase(), password: decoded.slice(colon + 1) }
}

export default fp(async (app) => {
  const key = randomBytes(32)
  const cache = new Map<string, { account: AuthAccount, expires: number }>()

  async function authenticateBasic (header: string | undefined): Promise<AuthAccount | undefined> {
    const creds = parseBasic(header)
    if (!creds) return undefined
    const cacheKey = createHmac('sha256', key).update(`${creds.email}\0${creds.password}`).digest('base64')
    const hit = cache.get(cacheKey)
    if (hit && hit.expires > Date.now()) return hit.account
    const row = await app.prisma.account.findUnique({ where: { email: creds.email } })
    // verify against a dummy hash when the account is unknown, so timing does not reveal emails
    const ok = await verifyPassword(creds.password, row?.passwordHash ?? DUMMY_HASH)
    if (!row || !ok) return undefined
    const account = { id: row.id, email: row.email, cloneNaming: row.cloneNaming }
    if (cache.size >= CACHE_MAX) cache.clear()
    cache.set(cacheKey, { account, expires: Date.now() + CACHE_TTL_MS })
    return account
  }

  app.decorate('authenticateBasic', authenticateBasic)
  app.decorateRequest('account', null as unknown as AuthAccount)

  // Decided on the route the router matched (it decodes `%61pi`), never on the raw URL. Unmatched
  // paths answer 404 whatever the credentials: no database work, and nothing learnt from it.
  app.addHook('onRequest', async (request: FastifyRequest) => {
    if (request.is404) return
    if (!request.routeOptions.url?.startsWith('/api/')) return
    if (request.routeOptions.config?.auth === false) return
    const account = await authenticateBasic(request.headers.authorization)
    if (!account) throw errors.unauthorized()
    request.account = account
  })
}, { name: 'auth', dependencies: ['prisma'] })

// scrypt hash of a random password, used only to spend the same time on unknown accounts
const DUMMY_HASH = 'scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='
