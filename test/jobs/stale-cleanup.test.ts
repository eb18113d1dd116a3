// A run that fails before it learns its attempt is stale (its job was taken over while it was
// held up, and the newer attempt shares the job id its cleanup guards on) does not run its
// cleanup: it would undo the newer attempt's work. The newer attempt's own cleanup still runs.
import t from 'tap'
import { enqueueJob } from '../../src/engine/enqueue.ts'
import { JobFailure, type JobHandler } from '../../src/engine/types.ts'
import { buildTestApp, createUser } from '../helpers/app.ts'
import { waitForJob } from '../helpers/jobs.ts'
import { jobRow, runStale, TAKEN_BY } from '../helpers/takeover.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)

t.test('a stale attempt that fails runs no cleanup and records nothing; the newer attempt cleans up', async t => {
  const cleanups: number[] = []
  const handler: JobHandler = {
    async run (ctx) {
      // held here (the table is locked) while the job is taken over; then fails, not knowing
      await ctx.prisma.setting.findUnique({ where: { key: `input-${ctx.job.id}` } })
      throw new JobFailure('the input moved on')
    },
    async cleanup (ctx) {
      cleanups.push(ctx.job.attempts)
      // what a cleanup guarded by the job id alone does: undo whatever the job holds
      await ctx.prisma.setting.upsert({ where: { key: `undone-${ctx.job.id}` }, create: { key: `undone-${ctx.job.id}`, value: String(ctx.job.attempts) }, update: { value: String(ctx.job.attempts) } })
    }
  }
  const { id } = await app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation: 'drive_resize' }))
  const stale = await runStale(t, app, databaseUrl, id, 'settings', { drive_resize: handler })
  t.ok(stale.tookOver, 'the job was taken over while its attempt waited')
  t.same(cleanups, [], 'the stale attempt ran no cleanup')
  t.equal(await app.prisma.setting.findUnique({ where: { key: `undone-${id}` } }), null, 'so it undid nothing of the newer attempt')
  t.match(await jobRow(app, id), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'nor recorded its failure')
  await stale.newer()
  // the engine claims the job again (attempt 3, a takeover of a non-resumable job): it is undone
  const done = await waitForJob(app, id)
  t.equal(done.state, 'error', 'the newer attempt failed it')
  t.same(cleanups, [3], 'and ran its cleanup')
  t.match(await app.prisma.setting.findUnique({ where: { key: `undone-${id}` } }), { value: '3' })
})
