// A Prisma transaction that is still starting when the client disconnects gives its connection back
// (src/db/client.ts). `$disconnect()` rolls back the transactions it knows and then the pool ends,
// which waits for every checked-out connection; a transaction whose BEGIN was in flight was marked
// rolled back with no connection to roll back, and when its BEGIN returned Prisma threw ("Unknown
// transaction status") and never released the connection. The pool's end, and so the service's
// stop, waited forever: a test file on Ceph hung in its teardown until tap killed it (CI, 420 s).
import t from 'tap'
import { createDatabase } from '../../src/db/client.ts'
import pg from 'pg'
import { createTestDatabase } from '../helpers/db.ts'

const databaseUrl = await createTestDatabase(t)
const BOUND_MS = 5000

/** 'ended', or 'still waiting' when `p` has not settled within BOUND_MS. */
async function within (p: Promise<unknown>): Promise<string> {
  let timer: NodeJS.Timeout | undefined
  const waited = new Promise<string>(resolve => { timer = setTimeout(() => resolve('still waiting'), BOUND_MS) })
  try {
    return await Promise.race([p.then(() => 'ended'), waited])
  } finally {
    clearTimeout(timer)
  }
}

t.test('a transaction still connecting when $disconnect() runs is refused, and its connection released', async t => {
  // an empty pool: the transaction's connection is still being opened when the disconnect starts
  const { prisma, pool, close } = createDatabase(databaseUrl, { max: 2 })
  await prisma.$connect()
  const tx = prisma.$transaction(async (tx) => tx.$queryRaw`SELECT 1`)
  const outcome = tx.then(() => 'committed', (err: Error) => err.message)
  await new Promise(resolve => setImmediate(resolve))
  t.equal(pool.totalCount, 1, 'its connection is being opened')
  t.equal(await within(close()), 'ended', 'the disconnect and the pool\'s end end')
  t.notMatch(await outcome, /^committed$/, 'the transaction did not run')
  t.equal(pool.totalCount, 0, 'no connection is left')
  t.ok(pool.ended, 'the pool ended')
})

t.test('a transaction that starts while $disconnect() is rolling back the others is released by the pool\'s end', async t => {
  const { prisma, pool, close } = createDatabase(databaseUrl, { max: 2 })
  await prisma.$connect()
  // a running transaction whose rollback must wait for its statement: the disconnect's rollbacks
  // last ~600 ms, and the second transaction's BEGIN returns meanwhile
  let running!: () => void
  const isRunning = new Promise<void>(resolve => { running = resolve })
  const slow = prisma.$transaction(async (tx) => {
    running()
    await tx.$queryRaw`SELECT pg_sleep(0.6)`
  }, { timeout: 10_000 }).then(() => 'committed', (err: Error) => err.message)
  await isRunning
  const starting = prisma.$transaction(async (tx) => tx.$queryRaw`SELECT 1`).then(() => 'committed', (err: Error) => err.message)
  await new Promise(resolve => setImmediate(resolve))
  t.equal(pool.totalCount, 2, 'the second transaction\'s connection is being opened')
  t.equal(await within(close()), 'ended', 'the disconnect and the pool\'s end end')
  t.notMatch(await starting, /^committed$/, 'the starting transaction did not run')
  t.notMatch(await slow, /^committed$/, 'the running one was rolled back')
  t.equal(pool.totalCount, 0, 'no connection is left')
})

/**
 * Connections to the test database other than `admin`'s own, once those closed have gone: a
 * server process leaves pg_stat_activity a moment after its client hung up (on a loaded machine,
 * long enough to be counted), so the count is read again for up to 3 s while it is above 0. A
 * connection left open (a pool nothing ends) stays counted.
 */
async function connections (admin: pg.Client): Promise<number> {
  const deadline = Date.now() + 3000
  for (;;) {
    const r = await admin.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()')
    if (r.rows[0].n === 0 || Date.now() > deadline) return r.rows[0].n
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

t.test('a Prisma query after close() fails and opens no connection', async t => {
  const admin = new pg.Client({ connectionString: databaseUrl })
  await admin.connect()
  t.teardown(() => admin.end())
  const { prisma, close } = createDatabase(databaseUrl, { max: 2 })
  t.equal(await prisma.account.count(), 0)
  await close()
  t.equal(await connections(admin), 0, 'closed: no connection left')
  // a late write of a stopping service: the pg adapter would have built a pool of its own for it,
  // without the service's error listeners, that nothing ever ended
  await t.rejects(prisma.account.count(), /Cannot use a pool after calling end/, 'the query fails')
  await t.rejects(prisma.$transaction(async (tx) => tx.account.count()), 'a transaction too')
  t.equal(await connections(admin), 0, 'no connection was opened')
})

t.test("Prisma's own $disconnect() leaves the shared pool serving; Prisma reconnects on it", async t => {
  // Prisma disconnects by itself after a query compiler panic; the raw-SQL paths share its pool
  const { prisma, pool, close } = createDatabase(databaseUrl, { max: 2 })
  t.teardown(close)
  t.equal(await prisma.account.count(), 0)
  await prisma.$disconnect()
  t.notOk(pool.ended, 'the pool did not end')
  t.same((await pool.query('SELECT 1 AS one')).rows, [{ one: 1 }], 'the pool serves raw SQL')
  t.equal(await prisma.account.count(), 0, 'Prisma reconnected')
  t.ok(pool.totalCount >= 1 && pool.totalCount <= 2, 'on the same pool')
})
