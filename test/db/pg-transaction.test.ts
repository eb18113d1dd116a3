// pgTransaction: fn's writes commit together; a throw rolls them back and the connection goes back
// to the pool; a connection whose COMMIT failed is destroyed, not handed to the next caller.
import t from 'tap'
import pg from 'pg'
import { pgTransaction } from '../../src/db/pg-transaction.ts'
import { createTestDatabase } from '../helpers/db.ts'

const pool = new pg.Pool({ connectionString: await createTestDatabase(t), max: 2 })
t.teardown(() => pool.end())
await pool.query('CREATE TABLE tx_probe (id int, CONSTRAINT tx_probe_u UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)')
const ids = async () => (await pool.query<{ id: number }>('SELECT id FROM tx_probe ORDER BY id')).rows.map(r => r.id)

t.test('commits what fn wrote, and returns its value', async t => {
  const out = await pgTransaction(pool, async (c) => {
    await c.query('INSERT INTO tx_probe VALUES (1), (2)')
    return 'done'
  })
  t.equal(out, 'done')
  t.same(await ids(), [1, 2])
  t.equal(pool.idleCount, pool.totalCount, 'the connection is back in the pool')
})

t.test('a throw rolls back and is rethrown; the connection is reused', async t => {
  const before = pool.totalCount
  const err = await pgTransaction(pool, async (c) => {
    await c.query('INSERT INTO tx_probe VALUES (3)')
    throw new Error('no')
  }).catch((e: Error) => e)
  t.equal((err as Error).message, 'no')
  t.same(await ids(), [1, 2], 'nothing of it was kept')
  t.equal(pool.totalCount, before, 'the connection was given back, not destroyed')
})

t.test('a failed COMMIT is thrown and its connection destroyed', async t => {
  const client = await pool.connect()
  const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid
  client.release()
  const seen: number[] = []
  // the deferred unique check fails at COMMIT
  const err = await pgTransaction(pool, async (c) => {
    seen.push((await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid)
    await c.query('INSERT INTO tx_probe VALUES (1)')
  }).catch((e: { code?: string }) => e)
  t.equal((err as { code?: string }).code, '23505', 'the unique violation at COMMIT')
  t.same(seen, [pid], 'it ran on the pooled connection')
  const after = await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')
  t.not(after.rows[0].pid, pid, 'the next query runs on a new connection')
  t.same(await ids(), [1, 2])
})
