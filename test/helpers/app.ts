// Builds the real app on a fresh database for a test, with accounts and authenticated inject.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { FastifyInstance, FastifyServerOptions, InjectOptions, LightMyRequestResponse } from 'fastify'
import { buildApp, type AppOptions } from '../../src/app.ts'
import { loadConfig, type Config } from '../../src/config.ts'
import { addAccount } from '../../src/features/accounts/service.ts'
import { createTestDatabase } from './db.ts'

/** How long a test app's close may take before the test prints what it still waits on. */
const CLOSE_WARN_MS = 60_000

interface Teardown { teardown: (fn: () => Promise<void> | void) => void }

export interface TestApp {
  app: FastifyInstance
  config: Config
  databaseUrl: string
  dataDir: string
}

export async function buildTestApp (t: Teardown, opts: { config?: Partial<Config>, runWorkers?: boolean, databaseUrl?: string, listener?: AppOptions['listener'], logger?: FastifyServerOptions['logger'] } = {}): Promise<TestApp> {
  const databaseUrl = opts.databaseUrl ?? await createTestDatabase(t)
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'clonejobs-test-'))
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }))
  // STORAGE=rbd (with CEPH_CONF, RBD_POOL) runs the same tests on Ceph (npm run test:rbd)
  const { STORAGE, CEPH_CONF, RBD_POOL, CEPH_USER, CEPH_KEYRING } = process.env
  const config = loadConfig({ STORAGE, CEPH_CONF, RBD_POOL, CEPH_USER, CEPH_KEYRING }, {
    databaseUrl,
    dataDir,
    drivesDir: path.join(dataDir, 'drives'),
    logLevel: 'silent',
    bootstrapAccount: false,
    // building the app blocks the loop for seconds on a loaded machine; its first samples would shed requests
    maxEventLoopDelayMs: 0,
    ...opts.config
  })
  // every response is checked against its route's schema; a mismatch fails the test file
  const violations: string[] = []
  const app = await buildApp({
    config,
    databaseUrl,
    runWorkers: opts.runWorkers,
    listener: opts.listener,
    logger: opts.logger ?? (process.env.TEST_LOG ? { level: process.env.TEST_LOG } : false),
    responseValidation: { onViolation: message => { violations.push(message) } }
  })
  t.teardown(async () => {
    // a close that never ends is cut by tap's timeout with no word of why: say what it waits on
    const slow = setTimeout(() => {
      const pool = { total: app.dbPool.totalCount, idle: app.dbPool.idleCount, waiting: app.dbPool.waitingCount }
      console.error(`# app.close() still waiting after ${CLOSE_WARN_MS} ms: ` + JSON.stringify({ resources: process.getActiveResourcesInfo(), pool, runningJobs: app.jobs.activeJobs }))
    }, CLOSE_WARN_MS)
    slow.unref()
    await app.close()
    clearTimeout(slow)
    if (violations.length > 0) {
      console.error('# responses that do not match their schema:\n' + [...new Set(violations)].map(v => '#   ' + v).join('\n'))
      process.exitCode = 1
    }
  })
  return { app, config, databaseUrl, dataDir }
}

export interface TestUser {
  id: string
  email: string
  password: string
  authorization: string
}

let counter = 0
export async function createUser (app: FastifyInstance, email = `user${++counter}-${process.pid}@example.com`, password = 'correct horse battery'): Promise<TestUser> {
  const account = await addAccount(app.prisma, email, password)
  return { id: account.id, email: account.email, password, authorization: 'Basic ' + Buffer.from(`${email}:${password}`).toString('base64') }
}

export type Response = LightMyRequestResponse & { json: <T = any>() => T }

/** inject() as `user`, JSON in and out. */
export function client (app: FastifyInstance, user: TestUser) {
  const call = (method: InjectOptions['method'], url: string, payload?: unknown, headers: Record<string, string> = {}) =>
    app.inject({
      method,
      url,
      headers: { authorization: user.authorization, ...(payload !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      ...(payload !== undefined ? { payload: typeof payload === 'string' ? payload : JSON.stringify(payload) } : {})
    }) as Promise<Response>
  return {
    get: (url: string, headers?: Record<string, string>) => call('GET', url, undefined, headers),
    post: (url: string, body?: unknown, headers?: Record<string, string>) => call('POST', url, body ?? {}, headers),
    put: (url: string, body?: unknown, headers?: Record<string, string>) => call('PUT', url, body ?? {}, headers),
    delete: (url: string, body?: unknown, headers?: Record<string, string>) => call('DELETE', url, body, headers),
    raw: call
  }
}

/** Polls `check` until it returns a truthy value (for asynchronous status changes). */
export async function eventually<T> (check: () => Promise<T | undefined | false>, { timeoutMs = 15_000, intervalMs = 50 } = {}): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < deadline) {
    try {
      const v = await check()
      if (v) return v
    } catch (err) {
      last = err
    }
    await new Promise(resolve => setTimeout(resolve, intervalMs))
  }
  throw new Error(`condition not met within ${timeoutMs} ms${last ? ': ' + String(last) : ''}`)
}
