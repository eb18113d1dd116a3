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

export interface Database {
  prisma: PrismaClient
  /** The pg pool under `prisma`, shared with the raw-SQL paths (its waiting count is a load signal). */
  pool: pg.Pool
  /** Disconnects `prisma`, then ends the pool. */
  close: () => Promise<void>
}

/**
 * A Prisma client and the pg pool under it. The pool is the caller's, ended by `close()`, not by
 * Prisma: a `$disconnect()` of Prisma's own (after a query compiler panic it disconnects and
 * reconnects on the next query) must not end the pool the raw-SQL paths share. Once the pool has
 * ended, a Prisma query fails with pg's "Cannot use a pool after calling end on the pool" instead of
 * reconnecting: the pg adapter, left to itself, would build a new pool from the same options, with
 * none of the listeners below, that nothing ends (a late write of a stopping service opened one,
 * and a connection error in it ended the process).
 */
export function createDatabase (databaseUrl: string, opts: PoolOptions = {}): Database {
  const pool = new pg.Pool({
    connectionString: sessionUrl(databaseUrl),
    max: opts.max ?? 10,
    connectionTimeoutMillis: opts.waitMs ?? 5000,
    ...(opts.queryTimeoutMs ? { query_timeout: opts.queryTimeoutMs } : {})
  })
  // an idle connection dropped by the server must not crash the process; the pool replaces it
  pool.on('error', () => {})
  keepCheckedOutErrors(pool)
  const adapter = new PrismaPgReleasing(pool)
  const prisma = new PrismaClient({ adapter, transactionOptions: { maxWait: opts.waitMs ?? 5000 } })
  const close = async (): Promise<void> => {
    await prisma.$disconnect()
    if (!pool.ended) await pool.end()
  }
  return { prisma, pool, close }
}

type PgAdapter = Awaited<ReturnType<PrismaPg['connect']>>
type PgTransaction = Awaited<ReturnType<PgAdapter['startTransaction']>>

/**
 * The pg adapter, but no transaction keeps its connection checked out for good.
 *
 * - **A failed COMMIT or ROLLBACK.** Prisma's transaction manager sends COMMIT (ROLLBACK) as a query
 *   and only after it succeeds calls the transaction's commit() (rollback()), which is where the
 *   adapter releases the connection. When that query failed (a serialization failure or a deferred
 *   constraint at COMMIT, the connection lost, the query timeout on a stalled server), nothing
 *   released it. After as many such failures as the pool has connections, every query waited for
 *   one that never came and the service answered 503 until it was restarted
 *   (test/db/transaction-release.test.ts). Here the failed statement's connection is released at
 *   once and discarded: its state (a COMMIT still running on the server, a broken socket) is unknown.
 * - **A transaction starting while the client disconnects.** `$disconnect()` rolls back the
 *   transactions it knows, and then `close()` ends the pool, which waits for every checked-out connection. A
 *   transaction still starting then (its connection being opened, or its BEGIN in flight) is marked
 *   rolled back with no connection to roll back; when its start returns, Prisma finds it closed,
 *   throws, and never releases the connection, so the pool's end, and with it the service's stop,
 *   waited forever (test/db/disconnect-release.test.ts). Here the adapter's dispose (called by
 *   `$disconnect()` after that rollback) releases every transaction still open, and one whose start
 *   ends after it is released at once and refused.
 */
class PrismaPgReleasing extends PrismaPg {
  override async connect (): Promise<PgAdapter> {
    const adapter = await super.connect()
    const start = adapter.startTransaction.bind(adapter)
    const dispose = adapter.dispose.bind(adapter)
    // transactions handed to Prisma and not yet ended, each with its release
    const open = new Map<PgTransaction, (err: Error) => void>()
    let disposing = false
    adapter.startTransaction = async (isolationLevel) => {
      const { tx, release } = trackedTransaction(await start(isolationLevel), open)
      if (disposing) {
        const err = new Error('the database client is disconnecting')
        release(err)
        throw err
      }
      return tx
    }
    adapter.dispose = async () => {
      disposing = true
      // the transactions Prisma rolled back are gone from `open`; the rest it lost track of, or
      // began while it was rolling back: the client is disconnecting, so their connections go now
      const closing = new Error('the database client disconnected with this transaction still open')
      for (const release of [...open.values()]) release(closing)
      await dispose()
    }
    return adapter
  }
}

/**
 * `tx`, its connection released once whatever ends it (commit, rollback, a failed COMMIT or
 * ROLLBACK, `release`); listed in `open` until then.
 */
function trackedTransaction (tx: PgTransaction, open: Map<PgTransaction, (err: Error) => void>): { tx: PgTransaction, release: (err: Error) => void } {
  // the adapter's own handle on the checked-out connection (PgQueryable's `client`)
  const client = (tx as unknown as { client?: Partial<pg.PoolClient> }).client
  const { executeRaw, commit, rollback } = tx
  let released = false
  const ended = (): boolean => {
    if (released) return false
    released = true
    open.delete(tx)
    return true
  }
  // discards the connection: its state (a statement still running, a transaction open) is unknown
  const release = (err: Error): void => {
    if (!ended()) return
    if (typeof client?.release === 'function') client.release(err)
    else void rollback.call(tx).catch(() => {})
  }
  tx.executeRaw = async (query) => {
    try {
      return await executeRaw.call(tx, query)
    } catch (err) {
      if (query.sql === 'COMMIT' || query.sql === 'ROLLBACK') release(err instanceof Error ? err : new Error(String(err)))
      throw err
    }
  }
  // released already: the manager's own release, should it still come, must not release it twice
  tx.commit = async () => { if (ended()) await commit.call(tx) }
  tx.rollback = async () => { if (ended()) await rollback.call(tx) }
  open.set(tx, release)
  return { tx, release }
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
