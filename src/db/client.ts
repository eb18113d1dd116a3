// The Prisma client on the pure-TypeScript engine with the pg driver adapter (no native engine).
import { PrismaPg } from '@prisma/adapter-pg'
import pg from 'pg'
import { PrismaClient } from './generated/client.ts'
import { sessionUrl } from './session.ts'

import { Prisma } from './generated/client.ts'
export { Prisma }
export type { PrismaClient } from './generated/client.ts'
export type Tx = Prisma.TransactionClient

export interface PoolOptions {
  /** Connections in the pool. */
  max?: number
  /** How long a query or transaction waits for a free connection before failing (503 upstream). */
  waitMs?: number
  /** Client-side limit on one query's answer, so a stalled server cannot hold a request forever. */
  queryTimeoutMs?: number
}

/** A Prisma client and the pg pool under it (its waiting count is a load signal). */
export function createDatabase (databaseUrl: string, opts: PoolOptions = {}): { prisma: PrismaClient, pool: pg.Pool } {
  const pool = new pg.Pool({
    connectionString: sessionUrl(databaseUrl),
    max: opts.max ?? 10,
    connectionTimeoutMillis: opts.waitMs ?? 5000,
    ...(opts.queryTimeoutMs ? { query_timeout: opts.queryTimeoutMs } : {})
  })
  // an idle connection dropped by the server must not crash the process; the pool replaces it
  pool.on('error', () => {})
  keepCheckedOutErrors(pool)
  const adapter = new PrismaPg(pool, { disposeExternalPool: true })
  const prisma = new PrismaClient({ adapter, transactionOptions: { maxWait: opts.waitMs ?? 5000 } })
  return { prisma, pool }
}

/**
 * A pooled connection that is checked out but between queries (a transaction awaiting other work)
 * has no 'error' listener (the pool listens only while it is idle): its backend ending (a restart,
 * a terminate, a failover) would throw from an 'error' event and end the process. With a listener
 * of its own the error stays with the connection: its next query fails, and the pool discards it
 * when it is released.
 */
export function keepCheckedOutErrors (pool: pg.Pool): void {
  pool.on('connect', (client) => { client.on('error', () => {}) })
}

export function createPrisma (databaseUrl: string, opts: PoolOptions = {}): PrismaClient {
  return createDatabase(databaseUrl, opts).prisma
}
