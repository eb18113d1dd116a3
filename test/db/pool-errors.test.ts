// A pooled connection that is checked out but idle between queries has no 'error' listener of
// the pool's: its backend ending (a restart, an administrator's terminate) threw an unhandled
// 'error' event and ended the whole process (seen in CI, when a test database was dropped WITH
// (FORCE)). Now the connection keeps the error: its next query fails, the pool discards it.
import pg from 'pg'
import t from 'tap'
import type { Test } from 'tap'
import { JobEngine } from '../../src/engine/engine.ts'
import { createDatabase } from '../../src/db/client.ts'
import { createTestDatabase } from '../helpers/db.ts'
import { memoryLogger } from '../helpers/log.ts'

const databaseUrl = await createTestDatabase(t)

/** Checks a connection out of `pool`, ends its backend from `admin`, and checks what follows. */
async function terminateCheckedOut (t: Test, pool: pg.Pool, admin: { query: (sql: string, values: unknown[]) => Promise<unknown> }): Promise<void> {
  const held = await pool.connect()
  const { rows: [{ pid }] } = await held.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')
  await admin.query('SELECT pg_terminate_backend($1::int, 10000)', [pid])
  // the server's termination message reaches the idle connection
  await new Promise(resolve => setTimeout(resolve, 200))
  await t.rejects(held.query('SELECT 1'), 'its next query fails')
  held.release()
  t.same((await pool.query('SELECT 1 AS one')).rows, [{ one: 1 }], 'the pool serves the next query on another connection')
}

t.test('the service pool: a checked-out connection whose backend ends fails its next query; the process lives', async t => {
  const { pool, close } = createDatabase(databaseUrl, { max: 3 })
  t.teardown(close)
  await terminateCheckedOut(t, pool, pool)
})

t.test('the engine\'s pool too', async t => {
  const { prisma, pool, close } = createDatabase(databaseUrl, { max: 2 })
  t.teardown(close)
  const engine = new JobEngine({ prisma, databaseUrl, log: memoryLogger().log, concurrency: 1, leaseSeconds: 30 })
  t.teardown(() => engine.stop())
  await terminateCheckedOut(t, (engine as unknown as { pool: pg.Pool }).pool, pool)
})
