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

t.test('begin: a first statement sent with BEGIN runs inside the transaction; when it fails, nothing is kept and the connection is reused', async t => {
  // a row lock taken with BEGIN is held until COMMIT: another session cannot take it meanwhile
  const other = await pool.connect()
  t.teardown(() => other.release())
  const out = await pgTransaction(pool, async (c) => {
    await c.query('INSERT INTO tx_probe VALUES (5)')
    const inside = await c.query<{ v: string }>("SELECT current_setting('probe.v') AS v")
    const nowait = await other.query('SELECT id FROM tx_probe WHERE id = 1 FOR UPDATE NOWAIT').then(() => 'taken', (e: { code?: string }) => e.code)
    return { v: inside.rows[0].v, nowait }
  }, { begin: "SELECT set_config('probe.v', 'set', true); SELECT id FROM tx_probe WHERE id = 1 FOR UPDATE" })
  t.same(out, { v: 'set', nowait: '55P03' }, 'its transaction-local setting is seen by fn, and its row lock held')
  t.equal((await pool.query<{ v: string }>("SELECT current_setting('probe.v', true) AS v")).rows[0].v ?? '', '', 'it ended with the transaction')
  t.same(await ids(), [1, 2, 5])
  await pool.query('DELETE FROM tx_probe WHERE id = 5')
  const before = pool.totalCount
  let ran = false
  const err = await pgTransaction(pool, async () => { ran = true }, { begin: 'SELECT 1 / 0' }).catch((e: { code?: string }) => e)
  t.equal((err as { code?: string }).code, '22012', 'its error is thrown')
  t.notOk(ran, 'fn did not run')
  t.equal(pool.totalCount, before, 'the connection was rolled back and given back, not destroyed')
  t.equal((await pool.query<{ n: number }>('SELECT 1 AS n')).rows[0].n, 1, 'and it still answers')
})
