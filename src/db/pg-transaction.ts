// A transaction on a connection of the pg pool, for hot request paths where Prisma's interactive
// transaction is the cost (its query path costs about 1 ms per statement on these machines, the
// pool's a third of that): BEGIN, `fn`, COMMIT; ROLLBACK when `fn` throws. A connection whose
// BEGIN, COMMIT or ROLLBACK failed is in an unknown state: it is destroyed, not given back.
import type pg from 'pg'

export async function pgTransaction<T> (pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect()
  let destroy: Error | undefined
  const mark = (err: unknown): Error => { destroy = err instanceof Error ? err : new Error(String(err)); return destroy }
  try {
    await client.query('BEGIN').catch(err => { throw mark(err) })
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
