// A transaction left idle (its process frozen by SIGSTOP or a paused VM, or cut off from the
// database) is ended by the server after 30 s (idle_in_transaction_session_timeout, set on every
// connection of the service: src/db/session.ts). Before, it kept its row locks for as long as it
// stayed so: claims skip locked rows (FOR UPDATE SKIP LOCKED), so the job it held stayed
// unclaimed, or `started` past its lease, until the process ran again.
import t from 'tap'
import { enqueueJob } from '../../src/engine/enqueue.ts'
import { buildTestApp, createUser } from '../helpers/app.ts'
import { startEngine, waitForJob } from '../helpers/jobs.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)

t.test('every connection of the service ends a transaction idle for 30 s', async t => {
  const show = 'SHOW idle_in_transaction_session_timeout'
  t.equal((await app.dbPool.query<{ idle_in_transaction_session_timeout: string }>(show)).rows[0].idle_in_transaction_session_timeout, '30s', 'the pool\'s connections')
  const viaPrisma = await app.prisma.$transaction(tx => tx.$queryRawUnsafe<Array<{ idle_in_transaction_session_timeout: string }>>(show))
  t.equal(viaPrisma[0].idle_in_transaction_session_timeout, '30s', 'Prisma\'s transactions (the same pool)')
})

t.test('a job row locked by a transaction that went idle is claimed once the server ends it', async t => {
  const { id } = await app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation: 'drive_clone' }))
  // a connection of the service's pool takes the job's row and then sends nothing more, as a
  // frozen process would (the server cannot tell the two apart)
  const frozen = await app.dbPool.connect()
  await frozen.query('BEGIN')
  await frozen.query('SELECT id FROM jobs WHERE id = $1::uuid FOR UPDATE', [id])
  const lockedAt = Date.now()
  let ranAt = 0
  await startEngine(t, app, { drive_clone: { async run () { ranAt = Date.now() } } }, { databaseUrl, pollMs: 250 })
  const early = await waitForJob(app, id, { timeoutMs: 5_000 }).catch(() => undefined)
  t.equal(early, undefined, 'the engine skips the locked row meanwhile')
  const row = await waitForJob(app, id, { timeoutMs: 45_000 })
  t.equal(row.state, 'success', 'then claims and runs it')
  t.ok(ranAt - lockedAt >= 29_000 && ranAt - lockedAt < 40_000, `it ran ${ranAt - lockedAt} ms after the row was locked (the 30 s timeout, then a poll)`)
  const after = await frozen.query('SELECT 1').then(() => undefined, (err: Error) => err)
  t.ok(after instanceof Error, `the idle session was ended by the server (${String(after?.message)})`)
  frozen.release(after ?? true)
  t.equal((await app.dbPool.query<{ n: number }>('SELECT 1 AS n')).rows[0].n, 1, 'the pool goes on with fresh connections')
})
