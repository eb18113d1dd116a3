// Fencing: (job id, attempt) guards every write a handler makes through the engine; a handler whose
// lease cannot be renewed is aborted locally before the lease runs out, so two attempts of one job
// never run at once and a stale attempt commits nothing.
import t from 'tap'
import { enqueueJob } from '../../src/engine/enqueue.ts'
import { LeaseLost } from '../../src/engine/held.ts'
import { JobEngine } from '../../src/engine/engine.ts'
import { createDatabase } from '../../src/db/client.ts'
import type { JobContext, JobHandler } from '../../src/engine/types.ts'
import { buildTestApp, createUser } from '../helpers/app.ts'
import { abortableSleep, guardAnswer, holdThread, sleep, startEngine, waitForJob } from '../helpers/jobs.ts'
import { startTcpProxy } from '../helpers/tcp-proxy.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)

const enqueue = (operation: 'server_start' | 'server_stop' | 'drive_resize') =>
  app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation }))

const aborted = (signal: AbortSignal) => new Promise<number>(resolve => {
  if (signal.aborted) return resolve(Date.now())
  signal.addEventListener('abort', () => resolve(Date.now()), { once: true })
})

/** Tries every kind of write through the context; returns how many were refused with LeaseLost. */
async function tryWrites (ctx: JobContext, tag: string): Promise<number> {
  let refused = 0
  const attempt = async (fn: () => Promise<unknown>) => { try { await fn() } catch (err) { if (err instanceof LeaseLost) refused++; else throw err } }
  ctx.progress({ description: `${tag} progress`, bytesDone: 1 })
  await attempt(() => ctx.checkpoint({ by: tag }))
  await attempt(() => ctx.fence())
  await attempt(() => ctx.fenced(tx => tx.setting.create({ data: { key: `${tag}-${ctx.job.id}`, value: 'renamed into place' } })))
  return refused
}

t.test('injected heartbeat failures never yield two running attempts; the stale one commits nothing', async t => {
  const runs: Array<{ attempt: number, start: number, abortedAt?: number, refused?: number }> = []
  let secondStarted!: () => void
  const second = new Promise<void>(resolve => { secondStarted = resolve })
  const handler: JobHandler = {
    resumable: true,
    async run (ctx) {
      const run: typeof runs[number] = { attempt: ctx.job.attempts, start: Date.now() }
      runs.push(run)
      if (ctx.job.attempts === 1) {
        await ctx.checkpoint({ by: 'first' })
        run.abortedAt = await aborted(ctx.signal)
        // a handler that ignores its signal and carries on writing once the job is someone else's
        await Promise.race([second, sleep(8000)])
        run.refused = await tryWrites(ctx, 'stale')
        return 'stale result'
      }
      secondStarted()
      await sleep(300)
      return 'fresh result'
    }
  }
  const failing = await startEngine(t, app, { server_start: handler }, {
    databaseUrl, leaseSeconds: 3, leaseMarginMs: 1000, faults: { heartbeat: () => { throw new Error('injected heartbeat failure') } }
  })
  const { id } = await enqueue('server_start')
  await waitForJob(app, id, { states: ['started'] })
  await startEngine(t, app, { server_start: handler }, { databaseUrl, leaseSeconds: 3 })
  const done = await waitForJob(app, id, { timeoutMs: 20_000 })
  await failing.idle()
  t.equal(runs.length, 2, 'two attempts ran')
  const [a, b] = runs
  t.equal(a.attempt, 1)
  t.equal(b.attempt, 2)
  t.ok(a.abortedAt !== undefined && a.abortedAt < b.start, `attempt 1 was aborted (${a.abortedAt! - a.start} ms) before attempt 2 started (${b.start - a.start} ms)`)
  t.ok(a.abortedAt! - a.start < 3000, 'within its lease')
  t.equal(a.refused, 3, 'every write of the stale attempt was refused')
  t.equal(done.state, 'success')
  t.same(done.result, 'fresh result', 'the stale result was not recorded')
  t.equal(done.attempts, 2)
  t.not(done.description, 'stale progress', 'the stale progress was not written')
  t.equal(await app.prisma.setting.findUnique({ where: { key: `stale-${id}` } }), null, 'the stale guarded write did not commit')
})

t.test('a write refused by the database (a newer attempt holds the job) stops the stale attempt', async t => {
  let abortedAt: number | undefined
  let refused = -1
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  const handler: JobHandler = {
    async run (ctx) {
      await gate
      refused = await tryWrites(ctx, 'fenced')
      abortedAt = ctx.signal.aborted ? Date.now() : undefined
      return 'should not be recorded'
    }
  }
  const engine = await startEngine(t, app, { server_stop: handler }, { databaseUrl, leaseSeconds: 30 })
  const { id } = await enqueue('server_stop')
  await waitForJob(app, id, { states: ['started'] })
  // another process took it over (its claim incremented attempts); same worker id, to show the
  // attempt alone fences
  await app.prisma.job.update({ where: { id }, data: { attempts: { increment: 1 } } })
  release()
  await engine.idle()
  t.equal(refused, 3, 'checkpoint, fence and the guarded transaction were refused')
  t.ok(abortedAt, 'and the handler was aborted')
  const row = await app.prisma.job.findUniqueOrThrow({ where: { id } })
  t.equal(row.state, 'started', 'the job is left to the newer attempt')
  t.equal(row.checkpoint, null)
  t.not(row.description, 'fenced progress')
  t.equal(row.result, null)
  t.equal(await app.prisma.setting.findUnique({ where: { key: `fenced-${id}` } }), null)
  await app.prisma.job.update({ where: { id }, data: { state: 'cancelled', lockedBy: null, finishedAt: new Date() } })
})

t.test('a worker whose database connection is cut mid-job stops before its lease ends', async t => {
  const target = new URL(databaseUrl)
  const proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) })
  const { prisma, close } = createDatabase(proxy.url(databaseUrl), { max: 4 })
  const engine = new JobEngine({ prisma, log: app.log, concurrency: 2, leaseSeconds: 3, pollMs: 200 })
  let abortedAt: number | undefined
  let reason: unknown
  engine.register('drive_resize', {
    async run (ctx) {
      await abortableSleep(60_000, ctx.signal).catch(() => {})
      abortedAt = Date.now()
      reason = ctx.signal.reason
    }
  })
  engine.start()
  t.teardown(async () => {
    await proxy.close()
    await engine.stop().catch(() => {})
    await close().catch(() => {})
  })
  const { id } = await enqueue('drive_resize')
  await waitForJob(app, id, { states: ['started'] })
  await sleep(1200) // a few heartbeats went through
  proxy.stall() // no bytes either way, no FIN or RST: a half-open connection
  const cutAt = Date.now()
  const before = await app.prisma.job.findUniqueOrThrow({ where: { id } })
  const stopped = () => abortedAt !== undefined
  while (!stopped() && Date.now() - cutAt < 10_000) await sleep(50)
  const row = await app.prisma.job.findUniqueOrThrow({ where: { id } })
  t.ok(abortedAt, 'the handler was aborted')
  t.ok(reason instanceof LeaseLost, 'because its lease could not be kept')
  t.ok(row.lockedUntil && abortedAt! < row.lockedUntil.getTime(), `before its lease ended (${row.lockedUntil!.getTime() - abortedAt!} ms to spare)`)
  t.ok(before.lockedUntil, 'the job was leased')
})

t.test('a job taken over because its lease lapsed (heartbeats failing, the process alive) says so when it cannot resume', async t => {
  const fragile: JobHandler = {
    async run (ctx) {
      if (ctx.job.attempts === 1) await aborted(ctx.signal)
      return 'not recorded'
    }
  }
  const resumableOnce: JobHandler = { resumable: true, run: fragile.run }
  const handlers = { server_start: fragile, server_stop: resumableOnce }
  await startEngine(t, app, handlers, {
    databaseUrl, leaseSeconds: 2, leaseMarginMs: 500, faults: { heartbeat: () => { throw new Error('injected heartbeat failure') } }
  })
  const a = await enqueue('server_start')
  const b = await app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation: 'server_stop', maxAttempts: 1 }))
  await waitForJob(app, a.id, { states: ['started'] })
  await waitForJob(app, b.id, { states: ['started'] })
  await startEngine(t, app, handlers, { databaseUrl, leaseSeconds: 30 })
  const cannotResume = await waitForJob(app, a.id, { timeoutMs: 20_000 })
  t.equal(cannotResume.state, 'error')
  t.equal(cannotResume.attempts, 2, 'taken over once')
  t.match(cannotResume.error, { error_type: 'backend', error_message: /stopped, or could not renew its lease in time; its work was undone \(this operation cannot resume/ })
  const noneLeft = await waitForJob(app, b.id, { timeoutMs: 20_000 })
  t.equal(noneLeft.state, 'error')
  t.match(noneLeft.error, { error_message: /could not renew its lease in time, and it has no attempts left \(1\)/ })
})

t.test('guard(): an attempt held up past its lease is refused by the clock before its watchdog has run', async t => {
  const seen: Array<{ first: string, held: string, aborted: boolean, refused: number }> = []
  const handler: JobHandler = {
    resumable: true,
    async run (ctx) {
      if (ctx.job.attempts > 1) return 'second attempt'
      await ctx.fence()
      const first = guardAnswer(ctx.guard)
      // the process held up (stopped, swapped out) right after its fence: the thread does not run,
      // so neither does the watchdog's timer, nor the heartbeat that would renew the lease
      holdThread(2200)
      const held = guardAnswer(ctx.guard)
      // what a storage does after a refused guard: nothing; the next write finds the attempt stale
      seen.push({ first, held, aborted: ctx.signal.aborted, refused: await tryWrites(ctx, 'held-up') })
      return 'not recorded'
    }
  }
  const engine = await startEngine(t, app, { server_start: handler }, { databaseUrl, leaseSeconds: 2, leaseMarginMs: 500 })
  const { id } = await enqueue('server_start')
  const done = await waitForJob(app, id, { timeoutMs: 20_000 })
  await engine.idle()
  t.same(seen, [{ first: 'allowed', held: 'LeaseLost', aborted: true, refused: 3 }],
    'allowed right after its fence; refused (LeaseLost, its signal aborted) once held up past its lease, though no timer had run; every later write refused')
  t.equal(done.state, 'success')
  t.equal(done.result, 'second attempt', 'the held-up attempt recorded nothing; the next one ran the job')
  t.equal(done.attempts, 2)
  t.equal(await app.prisma.setting.findUnique({ where: { key: `held-up-${id}` } }), null)
})
