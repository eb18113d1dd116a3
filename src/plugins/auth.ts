// HTTP Basic authentication (email + password) for every /api/2.0/ route, except routes that
// declare `config: { auth: false }` (token-carrying upload and download links).
// Failed logins are rate-limited per account and per client address (429); password hashing runs
// under a concurrency limit, one at a time per account, and once for any number of concurrent
// requests with the same credentials (single flight); a password change or removal empties the
// credential cache at once in this app (app.accountChanges) and, through NOTIFY, in every process.
import { createHmac, randomBytes } from 'node:crypto'
import type { FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import rateLimit from '@fastify/rate-limit'
import pLimit, { type LimitFunction } from 'p-limit'
import { Counter, Registry } from 'prom-client'
import { ApiError, errors } from '../http/errors.ts'
import { isStorableText } from '../http/text.ts'
import { verifyPassword } from '../domain/passwords.ts'
import { ACCOUNTS_CHANNEL, AccountChanges } from '../db/account-changes.ts'

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
    /** This app's account-change announcements: its credential cache forgets an announced account at once. */
    accountChanges: AccountChanges
    /** This app's authentication metrics (served by GET /metrics). */
    authMetrics: Registry
  }
}

// scrypt costs ~50 ms; a verified credential is remembered briefly, keyed by a keyed hash so the
// cache never holds passwords. Password changes and removals empty it (see above).
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

function tooManyFailures (seconds: number): ApiError {
  return new ApiError(429, 'permission', `Too many failed logins; retry in ${seconds} s`, null, { 'retry-after': String(seconds) })
}

export default fp(async (app) => {
  const key = randomBytes(32)
  const cache = new Map<string, { account: AuthAccount, expires: number }>()
  const cacheKeysOf = new Map<string, Set<string>>()
  // verifications under way, by cache key: concurrent requests with the same credentials share one
  const verifying = new Map<string, Promise<AuthAccount | undefined>>()
  // bumped by every account change: a verification that started before one is not cached
  let generation = 0
  const registry = new Registry()
  const verifications = new Counter({
    name: 'clonejobs_password_verifications_total',
    help: 'Password hashes verified (cache misses; concurrent requests with the same credentials share one), by outcome',
    labelNames: ['outcome'] as const,
    registers: [registry]
  })
  const { loginFailuresPerAccount, loginFailuresPerAddress, loginWindowMs, passwordHashConcurrency } = app.config

  // only failed logins are counted (rate-limit's own store and window); nothing is limited globally
  await app.register(rateLimit, { global: false })
  const failuresByAccount = app.createRateLimit({
    max: loginFailuresPerAccount,
    timeWindow: loginWindowMs,
    keyGenerator: (req) => 'account:' + (parseBasic(req.headers.authorization)?.email ?? '')
  })
  const failuresByAddress = app.createRateLimit({ max: loginFailuresPerAddress, timeWindow: loginWindowMs, keyGenerator: (req) => 'address:' + req.ip })

  // hashing: at most `passwordHashConcurrency` at once, and one at a time per account, so a flood
  // of guesses at one account queues behind itself rather than in front of everyone else
  const hashing = pLimit(passwordHashConcurrency)
  const perAccount = new Map<string, { limit: LimitFunction, users: number }>()
  async function verifyQueued (email: string, password: string, hash: string): Promise<boolean> {
    let entry = perAccount.get(email)
    if (!entry) perAccount.set(email, entry = { limit: pLimit(1), users: 0 })
    entry.users++
    try {
      const ok = await entry.limit(() => hashing(() => verifyPassword(password, hash)))
      verifications.inc({ outcome: ok ? 'ok' : 'failed' })
      return ok
    } finally {
      if (--entry.users === 0) perAccount.delete(email)
    }
  }

  function forget (accountId: string): void {
    generation++
    for (const k of cacheKeysOf.get(accountId) ?? []) cache.delete(k)
    cacheKeysOf.delete(accountId)
    // requests from now on verify afresh rather than join a verification of the old state
    verifying.clear()
  }
  const accountChanges = new AccountChanges()
  accountChanges.on(forget)
  app.decorate('accountChanges', accountChanges)
  app.decorate('authMetrics', registry)
  app.addHook('onReady', async () => {
    // other processes (the CLI) announce changes through PostgreSQL
    if (app.hasDecorator('jobListener')) {
      app.jobListener.on(ACCOUNTS_CHANNEL, forget)
      // announcements sent while the LISTEN connection was down are lost: forget every cached login
      app.jobListener.onReconnected(() => { cache.clear(); cacheKeysOf.clear() })
    }
  })

  async function authenticateBasic (header: string | undefined, request?: FastifyRequest): Promise<AuthAccount | undefined> {
    const creds = parseBasic(header)
    if (!creds) return undefined
    const cacheKey = createHmac('sha256', key).update(`${creds.email}\0${creds.password}`).digest('base64')
    const hit = cache.get(cacheKey)
    if (hit && hit.expires > Date.now()) return hit.account
    if (request) {
      for (const limiter of [failuresByAccount, failuresByAddress]) {
        const state = await limiter(request, { increment: false })
        if (!state.isAllowed && state.remaining === 0) throw tooManyFailures(Math.max(1, state.ttlInSeconds))
      }
    }
    // single flight: the first request with these credentials verifies, the others wait for it
    let pending = verifying.get(cacheKey)
    if (!pending) {
      const flight = verify(creds, cacheKey).finally(() => { if (verifying.get(cacheKey) === flight) verifying.delete(cacheKey) })
      verifying.set(cacheKey, pending = flight)
    }
    const account = await pending
    // every request with wrong credentials counts as a failed login, shared verification or not
    if (!account && request) await Promise.all([failuresByAccount(request), failuresByAddress(request)])
    return account
  }

  /** Looks the account up and verifies the password; caches the account when right. */
  async function verify (creds: { email: string, password: string }, cacheKey: string): Promise<AuthAccount | undefined> {
    const startedIn = generation
    const row = await app.prisma.account.findUnique({ where: { email: creds.email } })
    // verify against a dummy hash when the account is unknown, so timing does not reveal emails
    const ok = await verifyQueued(creds.email, creds.password, row?.passwordHash ?? DUMMY_HASH)
    if (!row || !ok) return undefined
    const account = { id: row.id, email: row.email, cloneNaming: row.cloneNaming }
    if (generation !== startedIn) return account // an account changed meanwhile: not remembered
    if (cache.size >= CACHE_MAX) { cache.clear(); cacheKeysOf.clear() }
    cache.set(cacheKey, { account, expires: Date.now() + CACHE_TTL_MS })
    let keys = cacheKeysOf.get(row.id)
    if (!keys) cacheKeysOf.set(row.id, keys = new Set())
    keys.add(cacheKey)
    return account
  }

  app.decorate('authenticateBasic', (header: string | undefined) => authenticateBasic(header))
  app.decorateRequest('account', null as unknown as AuthAccount)

  // Decided on the route the router matched (it decodes `%61pi`), never on the raw URL. Unmatched
  // paths answer 404 whatever the credentials: no database work, and nothing learnt from it.
  app.addHook('onRequest', async (request: FastifyRequest) => {
    if (request.is404) return
    if (!request.routeOptions.url?.startsWith('/api/')) return
    if (request.routeOptions.config?.auth === false) return
    const account = await authenticateBasic(request.headers.authorization, request)
    if (!account) throw errors.unauthorized()
    request.account = account
  })
}, { name: 'auth', dependencies: ['prisma'] })

// scrypt hash of a random password, used only to spend the same time on unknown accounts
const DUMMY_HASH = 'scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='
