// A run the engine's stop aborted: what it writes, and when. The stop ends, and then the service's
// database client closes: a write of the run after that reached Prisma after its disconnect, and the
// pg adapter reconnected on a pool of its own, without the service's error listeners, that nothing
// ended (a connection error in it ended test processes on Ceph). A file of its own: the run must
// be this engine's, with no other engine of the file to take its job over.
import t from 'tap'
import { enqueueJob } from '../../src/engine/enqueue.ts'
import type { JobHandler } from '../../src/engine/types.ts'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { sleep, startEngine } from '../helpers/jobs.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const api = client(app, alice)

/**
 * A client of the app's database that lists the operations begun once `after()` is true (`late`),
 * and every operation once it has ended (`ended`).
 */
function watched (after: () => boolean): { prisma: typeof app.prisma, late: string[], ended: string[] } {
  const late: string[] = []
  const ended: string[] = []
  const prisma = app.prisma.$extends({
    query: {
      async $allOperations ({ model, operation, args, query }) {
        const name = `${model ?? ''}.${operation}`
        if (after()) late.push(name)
        try {
          return await query(args)
        } finally {
          ended.push(name)
        }
      }
    }
  }) as unknown as typeof app.prisma
  return { prisma, late, ended }
}

/** A handler that reports progress twice (the second is left to the progress timer), then returns once aborted. */
function returnsWhenAborted (started: () => void) {
  return {
    async run (ctx: Parameters<JobHandler['run']>[0]) {
      ctx.progress({ bytesDone: 1, bytesTotal: 10 }) // written at once
      ctx.progress({ bytesDone: 2, bytesTotal: 10 }) // within the interval: left to a timer
      started()
      // the work ends after the abort (an rbd command that ran on), and the handler returns
      await new Promise(resolve => ctx.signal.addEventListener('abort', resolve, { once: true }))
      return 'done'
    }
  }
}

t.test('a handler that returns after a stop aborted it: its success is recorded before the stop ends, and nothing is written after', async t => {
  // the engine's Prisma operations begun once its stop() has returned (the service's database
  // client closes then: a write after it reconnected on a pool of its own, and could end the process)
  let stopped = false
  const { prisma, late } = watched(() => stopped)
  let started!: () => void
  const running = new Promise<void>(resolve => { started = resolve })
  const engine = await startEngine(t, app, { drive_flatten: returnsWhenAborted(started) }, { databaseUrl, prisma, progressIntervalMs: 4000 })
  const { id } = await app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation: 'drive_flatten' }))
  await running
  await engine.stop()
  stopped = true
  await sleep(4300) // past the progress timer
  t.same(late, [], 'no write once the stop has ended')
  const row = await app.prisma.job.findUniqueOrThrow({ where: { id } })
  t.equal(row.state, 'success', 'the finished work is recorded, not run again')
  t.equal(row.result, 'done')
  t.equal(row.bytesDone, 10n, 'its progress is complete')
  const log = await api.get(`/api/2.0/jobs/${id}/log/`)
  t.match(log.body, /succeeded in/)
})

t.test('a run whose lease is lost (here a simulated crash) writes nothing once aborted: neither its pending progress nor its end', async t => {
  let crashed = false
  const { prisma, late, ended } = watched(() => crashed)
  let started!: () => void
  const running = new Promise<void>(resolve => { started = resolve })
  const engine = await startEngine(t, app, { drive_flatten: returnsWhenAborted(started) }, { databaseUrl, prisma, progressIntervalMs: 4000 })
  const { id } = await app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation: 'drive_flatten' }))
  await running
  // the first progress write and its change event, begun before the crash, are done
  await eventually(async () => ended.includes('.$queryRawUnsafe'))
  engine.crash()
  crashed = true
  await sleep(4300) // past the progress timer
  t.same(late, [], 'no write once it crashed')
  const row = await app.prisma.job.findUniqueOrThrow({ where: { id } })
  t.equal(row.state, 'started', 'left to its lease')
  t.equal(row.bytesDone, 1n, 'the pending progress was not written')
  await app.prisma.job.update({ where: { id }, data: { state: 'cancelled', finishedAt: new Date(), lockedBy: null } })
})
