// Settling without deadlocks: a failing child locks its parent first, then itself, then cancels its
// siblings, so twenty siblings failing at the same moment in two processes settle one after the
// other: no deadlock, no retry, and the parent fails with a child's error.
import t from 'tap'
import { enqueueJob } from '../../src/engine/enqueue.ts'
import { JobFailure, type JobHandler } from '../../src/engine/types.ts'
import { buildTestApp, createUser } from '../helpers/app.ts'
import { startEngine, waitForJob } from '../helpers/jobs.ts'
import { memoryLogger } from '../helpers/log.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)

t.test('20 siblings failing together settle without a deadlock or a retry', async t => {
  const SIBLINGS = 20
  let started = 0
  let go!: () => void
  const together = new Promise<void>(resolve => { go = resolve })
  const child: JobHandler = {
    async run (ctx) {
      if (++started === SIBLINGS) go()
      await together
      throw new JobFailure(`child ${String((ctx.job.params as { n: number }).n)} broke`)
    }
  }
  let parentCleanups = 0
  const parent: JobHandler = { async run () { return 'never' }, async cleanup () { parentCleanups++ } }
  const { log, lines } = memoryLogger()
  for (let i = 0; i < 2; i++) {
    await startEngine(t, app, { drive_clone: child, server_clone: parent }, { databaseUrl, concurrency: SIBLINGS / 2, log })
  }
  const root = await app.prisma.$transaction(async tx => {
    const r = await enqueueJob(tx, { ownerId: alice.id, operation: 'server_clone' })
    for (let n = 0; n < SIBLINGS; n++) await enqueueJob(tx, { ownerId: alice.id, operation: 'drive_clone', parentId: r.id, rootId: r.id, params: { n } })
    return r
  })
  const done = await waitForJob(app, root.id, { timeoutMs: 30_000 })
  t.equal(started, SIBLINGS, 'all siblings ran at once')
  t.equal(done.state, 'error', 'the parent failed')
  t.match(done.error, { error_message: /child \d+ broke/ }, 'with a child\'s error')
  t.equal(parentCleanups, 1, 'its cleanup ran once')
  const kids = await app.prisma.job.findMany({ where: { parentId: root.id } })
  t.ok(kids.every(k => k.state === 'error' || k.state === 'cancelled'), 'every sibling settled')
  t.ok(kids.every(k => k.attempts === 1), 'each ran once')
  const text = JSON.stringify(lines)
  t.notMatch(text, /deadlock/i, 'no deadlock was logged')
  t.notOk(lines.some(l => /retrying/.test(l.msg)), 'no settle was retried')
  t.notOk(lines.some(l => l.level === 'error'), 'nothing logged at error level')
})
