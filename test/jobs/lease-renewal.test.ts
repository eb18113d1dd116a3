// Lease renewals under many jobs and held rows. A run's watchdog ends with the run: a heartbeat that
// renewed a job's lease while it still ran, and whose answer is read after the run ended (its end
// recorded, its watchdog cleared), must not arm it again, or it fires a lease later and logs "lease
// could not be renewed in time" for a job long finished (one way a look before shipping could count
// 6,580 such lines for 6,666 jobs failing at once). A row another transaction holds is renewed by a
// renewal that waits for its lock beside the beats, never by the beat itself: one held row must not
// leave every other job unrenewed.
import t from 'tap'
import { enqueueJob } from '../../src/engine/enqueue.ts'
import { JobFailure, type JobHandler } from '../../src/engine/types.ts'
import pg from 'pg'
import { buildTestApp, createUser, eventually } from '../helpers/app.ts'
import { abortableSleep, sleep, startEngine, waitForAllJobs, waitForJob } from '../helpers/jobs.ts'
import { memoryLogger } from '../helpers/log.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)

t.test('jobs that fail fast while heartbeats renew them leave no watchdog behind', async t => {
  const JOBS = 400
  const handler: JobHandler = {
    async run () {
      await sleep(Math.random() * 10)
      throw new JobFailure('refused')
    },
    // the cleanup holds the job's row for a moment, so heartbeats skip it and renew it one by one
    async cleanup (ctx) {
      await ctx.fenced(async () => { await sleep(5) })
    }
  }
  const { log, lines } = memoryLogger()
  // a lease long enough that a loaded machine does not lose one for real (its watchdog fires 4 s
  // after the last renewal)
  await startEngine(t, app, { drive_clone: handler }, { databaseUrl, concurrency: 8, leaseSeconds: 6, heartbeatMs: 50, log })
  await app.prisma.$transaction(async tx => {
    for (let n = 0; n < JOBS; n++) await enqueueJob(tx, { ownerId: alice.id, operation: 'drive_clone' })
  })
  await waitForAllJobs(app, 60_000)
  t.equal(await app.prisma.job.count({ where: { state: 'error' } }), JOBS, 'every job failed, as its handler said')
  // a lease (6 s) and then some: a watchdog armed again would have fired by now
  await sleep(6500)
  const late = lines.filter(l => /lease could not be renewed|job aborted/.test(l.msg))
  t.equal(late.length, 0, `no run was aborted after it ended (${late.length} were: ${JSON.stringify(late.slice(0, 2))})`)
})

t.test('a job whose row its own writes hold at nearly every beat keeps its lease', async t => {
  // back-to-back fenced transactions for two leases: a beat mostly finds the row locked and skips
  // it; once the watchdog comes within half a lease, a beat waits for the lock and renews it
  const handler: JobHandler = {
    async run (ctx) {
      const until = Date.now() + 8000
      let writes = 0
      while (Date.now() < until) {
        await ctx.fenced(async () => { await sleep(40) })
        writes++
      }
      return { writes }
    }
  }
  const { log, lines } = memoryLogger()
  await startEngine(t, app, { drive_resize: handler }, { databaseUrl, concurrency: 2, leaseSeconds: 4, heartbeatMs: 50, log })
  const job = await app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation: 'drive_resize' }))
  const done = await waitForJob(app, job.id, { timeoutMs: 30_000 })
  t.equal(done.state, 'success', `it succeeded (${JSON.stringify(done.error)})`)
  t.equal(done.attempts, 1, 'in one attempt')
  const writes = (done.result as { writes?: number } | null)?.writes ?? 0
  t.ok(writes > 50, `after ${writes} fenced writes`)
  t.notOk(lines.some(l => /lease/.test(l.msg)), 'no lease was lost')
})

t.test('a row another transaction holds past the lease does not hold up the other jobs\' renewals', async t => {
  const slow: JobHandler = {
    async run (ctx) {
      await abortableSleep(5000, ctx.signal)
      return 'slept'
    }
  }
  const { log, lines } = memoryLogger()
  // lease 4 s: a watchdog fires 2.7 s after the last renewal, well before the row is let go
  await startEngine(t, app, { drive_clone: slow, drive_resize: slow }, { databaseUrl, concurrency: 4, leaseSeconds: 4, heartbeatMs: 50, log })
  const [held, ...others] = await app.prisma.$transaction(async tx => [
    await enqueueJob(tx, { ownerId: alice.id, operation: 'drive_resize' }),
    ...await Promise.all([0, 1, 2].map(() => enqueueJob(tx, { ownerId: alice.id, operation: 'drive_clone' })))
  ])
  await eventually(async () => await app.prisma.job.count({ where: { lockedBy: { not: null }, state: 'started' } }) === 4)
  // another session holds one running job's row for longer than a lease
  const holder = new pg.Client({ connectionString: databaseUrl })
  await holder.connect()
  t.teardown(() => holder.end())
  await holder.query('BEGIN')
  await holder.query('SELECT 1 FROM jobs WHERE id = $1::uuid FOR UPDATE', [held.id])
  await sleep(3500)
  await holder.query('COMMIT')
  for (const o of others) {
    const done = await waitForJob(app, o.id, { timeoutMs: 20_000 })
    t.same([done.state, done.attempts], ['success', 1], 'a job beside it kept its lease and succeeded in its first attempt')
  }
  const lost = lines.filter(l => /lease/.test(l.msg)).map(l => l.obj.job)
  t.notOk(others.some(o => lost.includes(o.id)), `none of them lost its lease (${JSON.stringify(lines.filter(l => /lease/.test(l.msg)))})`)
})
