// While the statements recording jobs' ends are held up (here: one job's row locked by another
// session, so the batch holding it waits), an engine claims no more than SETTLING_MAX jobs whose
// ends wait behind them: a handler that finishes at once freed its slot for the next claim, and a
// held-up finish let thousands of finished runs pile up in one process, none recorded, all leased.
// Once the lock goes, every job is recorded.
import t from 'tap'
import pg from 'pg'
import { SETTLING_MAX } from '../../src/engine/engine.ts'
import { enqueueJob, enqueueJobs } from '../../src/engine/enqueue.ts'
import { JobFailure, type JobHandler } from '../../src/engine/types.ts'
import { buildTestApp, createUser, eventually } from '../helpers/app.ts'
import { sleep, startEngine, waitForAllJobs } from '../helpers/jobs.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)

t.test('a held-up finish stops the claims at SETTLING_MAX runs waiting to be recorded', async t => {
  const JOBS = 1000
  let release!: () => void
  const released = new Promise<void>(resolve => { release = resolve })
  const first: JobHandler = { async run () { await released; throw new JobFailure('first') } }
  const fast: JobHandler = { async run () { return 'done' } }
  const engine = await startEngine(t, app, { drive_resize: first, drive_clone: fast }, { databaseUrl, concurrency: 4 })
  const held = await app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation: 'drive_resize' }))
  await eventually(async () => (await app.prisma.job.findUnique({ where: { id: held.id } }))?.lockedBy !== null)
  // another session locks the running job's row: the statement recording its end waits for it
  const holder = new pg.Client({ connectionString: databaseUrl })
  await holder.connect()
  t.teardown(() => holder.end())
  await holder.query('BEGIN')
  await holder.query('SELECT 1 FROM jobs WHERE id = $1::uuid FOR UPDATE', [held.id])
  release()
  await app.prisma.$transaction(tx => enqueueJobs(tx, Array.from({ length: JOBS }, () => ({ ownerId: alice.id, operation: 'drive_clone' as const }))))
  // until the bound is reached (seconds on a loaded machine), then a while longer: no more claims
  let most = 0
  for (const deadline = Date.now() + 30_000; most < SETTLING_MAX && Date.now() < deadline;) {
    most = Math.max(most, engine.activeJobs)
    await sleep(20)
  }
  for (const end = Date.now() + 1500; Date.now() < end;) {
    most = Math.max(most, engine.activeJobs)
    await sleep(20)
  }
  const recorded = await app.prisma.job.count({ where: { state: 'success' } })
  t.equal(recorded, 0, 'nothing was recorded while the first finish waited')
  // SETTLING_MAX (256) waiting to be recorded, and the few claimed or running beside them
  t.ok(most >= SETTLING_MAX, `the runs waiting to be recorded reached the bound (${most})`)
  t.ok(most <= SETTLING_MAX + 4 + 16, `and went no further (${most} of the ${JOBS + 1} jobs were held by this engine at most)`)
  await holder.query('COMMIT')
  await waitForAllJobs(app, 60_000)
  t.equal(await app.prisma.job.count({ where: { state: 'success', attempts: 1 } }), JOBS, 'then every job was recorded, each in one attempt')
  t.equal((await app.prisma.job.findUnique({ where: { id: held.id } }))?.state, 'error', 'the first one as its handler failed it')
})
