// A run's lease watchdog ends with the run. A heartbeat that renewed a job's lease while the job was
// still running, and whose answer is read after the run ended (its end recorded, its watchdog
// cleared), must not arm the watchdog again: it would fire a lease later and log "lease could not be
// renewed in time" for a job long finished. Thousands of fast failures at once (a look before
// shipping found 6,580 such lines for 6,666 jobs) made that warning useless.
import t from 'tap'
import { enqueueJob } from '../../src/engine/enqueue.ts'
import { JobFailure, type JobHandler } from '../../src/engine/types.ts'
import { buildTestApp, createUser } from '../helpers/app.ts'
import { sleep, startEngine, waitForAllJobs, waitForJob } from '../helpers/jobs.ts'
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
  await startEngine(t, app, { drive_clone: handler }, { databaseUrl, concurrency: 8, leaseSeconds: 3, heartbeatMs: 50, log })
  await app.prisma.$transaction(async tx => {
    for (let n = 0; n < JOBS; n++) await enqueueJob(tx, { ownerId: alice.id, operation: 'drive_clone' })
  })
  await waitForAllJobs(app, 60_000)
  t.equal(await app.prisma.job.count({ where: { state: 'error' } }), JOBS, 'every job failed, as its handler said')
  // a lease (3 s) and then some: a watchdog armed again would have fired by now
  await sleep(4000)
  const late = lines.filter(l => /lease could not be renewed|job aborted/.test(l.msg))
  t.equal(late.length, 0, `no run was aborted after it ended (${late.length} were: ${JSON.stringify(late.slice(0, 2))})`)
})

t.test('a job whose row its own writes hold at nearly every beat keeps its lease', async t => {
  // back-to-back fenced transactions for two leases: a beat mostly finds the row locked and skips
  // it; once the watchdog comes within half a lease, a beat waits for the lock and renews it
  const handler: JobHandler = {
    async run (ctx) {
      const until = Date.now() + 6000
      let writes = 0
      while (Date.now() < until) {
        await ctx.fenced(async () => { await sleep(40) })
        writes++
      }
      return { writes }
    }
  }
  const { log, lines } = memoryLogger()
  await startEngine(t, app, { drive_resize: handler }, { databaseUrl, concurrency: 2, leaseSeconds: 3, heartbeatMs: 50, log })
  const job = await app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation: 'drive_resize' }))
  const done = await waitForJob(app, job.id, { timeoutMs: 30_000 })
  t.equal(done.state, 'success', `it succeeded (${JSON.stringify(done.error)})`)
  t.equal(done.attempts, 1, 'in one attempt')
  const writes = (done.result as { writes?: number } | null)?.writes ?? 0
  t.ok(writes > 50, `after ${writes} fenced writes`)
  t.notOk(lines.some(l => /lease/.test(l.msg)), 'no lease was lost')
})
