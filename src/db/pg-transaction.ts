// A transaction on a connection of the pg pool, for hot request paths where Prisma's interactive
// transaction is the cost (its query path costs about 1 ms per statement on these machines, the
// pool's a third of that): BEGIN, `fn`, COMMIT; ROLLBACK when `fn` throws. A connection whose
// BEGIN, COMMIT or ROLLBACK failed is in an unknown state: it is destroyed, not given back.
import type pg from 'pg'

export interface PgTransactionOptions {
  /**
   * A first statement, sent with BEGIN in one round trip (the simple protocol: no parameters, so
   * any value in it is a literal made with pg's escapeLiteral): e.g. the row lock that orders the
   * transaction, where each round trip counts (a chunk's record). When it fails, the transaction
   * is rolled back and its error thrown, as when `fn` throws.
   */
  begin?: string
}

export async function pgTransaction<T> (pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>, opts: PgTransactionOptions = {}): Promise<T> {
  const client = await pool.connect()
  let destroy: Error | undefined
  const mark = (err: unknown): Error => { destroy = err instanceof Error ? err : new Error(String(err)); return destroy }
  try {
    if (opts.begin === undefined) await client.query('BEGIN').catch(err => { throw mark(err) })
    else {
      try {
        await client.query(`BEGIN; ${opts.begin}`)
      } catch (err) {
        // BEGIN may have run (the statement after it failed) or not (the connection failed): a
        // ROLLBACK ends the transaction, or fails and the connection is destroyed
        await client.query('ROLLBACK').catch(mark)
        throw err
      }
    }
    let out: T
    try {
      out = await fn(client)
    } catch (err) {
      await client.query('ROLLBACK').catch(mark)
      throw err
    }
    await client.query('COMMIT').catch(err => { throw mark(err) })
    return out
  } finally {
    client.release(destroy)
  }
}
