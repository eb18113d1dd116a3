// The engine on real PostgreSQL: claiming across several "processes", progress, leases,
// takeover after a crash, graceful release.
import t, { type Test } from 'tap'
import { randomUUID } from 'node:crypto'
import pg from 'pg'
import { enqueueJob, type EnqueueInput } from '../../src/engine/enqueue.ts'
import { JobFailure, type JobHandler } from '../../src/engine/types.ts'
import { StorageError } from '../../src/storage/index.ts'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { abortableSleep, sleep, startEngine, waitForAllJobs, waitForJob } from '../helpers/jobs.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const api = client(app, alice)

const enqueue = (input: Partial<EnqueueInput> = {}) =>
  app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation: 'drive_create', ...input }))

t.test('several engines share the queue and never run one job twice', async t => {
  const runs = new Map<string, number>()
  let concurrent = 0
  let maxConcurrent = 0
  const handler: JobHandler = {
    async run (ctx) {
      runs.set(ctx.job.id, (runs.get(ctx.job.id) ?? 0) + 1)
      concurrent++
      maxConcurrent = Math.max(maxConcurrent, concurrent)
      await sleep(5)
      concurrent--
      return { by: ctx.job.id }
    }
  }
  const engines = await Promise.all([1, 2, 3].map(() => startEngine(t, app, { drive_resize: handler }, { databaseUrl, concurrency: 3 })))
  const ids: string[] = []
  await app.prisma.$transaction(async tx => {
    for (let i = 0; i < 60; i++) ids.push((await enqueueJob(tx, { ownerId: alice.id, operation: 'drive_resize' })).id)
  }, { timeout: 60_000 })
  await waitForAllJobs(app)
  t.equal(runs.size, 60, 'every job ran')
  t.ok([...runs.values()].every(n => n === 1), 'no job ran twice')
  t.ok(maxConcurrent <= 9, 'concurrency per engine is respected')
  const rows = await app.prisma.job.findMany({ where: { id: { in: ids } } })
  t.ok(rows.every(r => r.state === 'success' && r.progress === 100 && r.attempts === 1 && r.lockedBy === null))
  t.same(rows.find(r => r.id === ids[0])?.result, { by: ids[0] }, 'the handler result is stored')
  for (const e of engines) await e.stop()
})

t.test('a handler failure is recorded with a safe message, and the cleanup runs', async t => {
  let cleaned = ''
  const engine = await startEngine(t, app, {
    drive_delete: {
      async run () { throw new JobFailure('disk on fire', 'backend') },
      async cleanup (ctx, reason) { cleaned = `${ctx.job.id}:${reason.state}` }
    },
    drive_upload: { async run () { throw new Error('secret internal detail') } }
  }, { databaseUrl })
  const a = await enqueue({ operation: 'drive_delete' })
  const b = await enqueue({ operation: 'drive_upload' })
  const ja = await waitForJob(app, a.id)
  const jb = await waitForJob(app, b.id)
  t.equal(ja.state, 'error')
  t.same(ja.error, { error_type: 'backend', error_message: 'disk on fire' })
  t.equal(cleaned, `${a.id}:error`)
  t.equal(jb.state, 'error')
  t.notMatch(JSON.stringify(jb.error), /secret/, 'unexpected errors do not leak')
  await engine.stop()
})

t.test('progress becomes data.progress, bytes, eta and description, throttled', async t => {
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  const engine = await startEngine(t, app, {
    drive_clone: {
      async run (ctx) {
        for (let i = 1; i <= 40; i++) ctx.progress({ bytesDone: i * 1024 * 1024, bytesTotal: 100 * 1024 * 1024, description: `copied ${i} MiB` })
        await gate
      }
    }
  }, { databaseUrl, progressIntervalMs: 100 })
  const { id } = await enqueue({ operation: 'drive_clone' })
  const job = await eventuallyJob(id, j => j.data.progress === 40)
  t.equal(job.data.bytes_done, 40 * 1024 * 1024)
  t.equal(job.data.bytes_total, 100 * 1024 * 1024)
  t.equal(job.data.description, 'copied 40 MiB')
  t.equal(job.state, 'started')
  const events = await app.prisma.event.count({ where: { resourceId: id } })
  t.ok(events < 10, `progress writes are throttled (${events} events for 40 reports)`)
  release()
  const done = await waitForJob(app, id)
  t.equal(done.progress, 100, '100 only on success')
  t.equal(Number(done.bytesDone), 100 * 1024 * 1024)
  await engine.stop()
})

async function eventuallyJob (id: string, ok: (j: any) => boolean, timeoutMs = 10_000): Promise<any> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const j = (await api.get(`/api/2.0/jobs/${id}/`)).json()
    if (ok(j)) return j
    if (Date.now() > deadline) throw new Error('job never reached the expected state: ' + JSON.stringify(j))
    await sleep(50)
  }
}

t.test('takeover: a process that stops heartbeating loses its job within the lease', async t => {
  const attempts: number[] = []
  const resumable: JobHandler = {
    resumable: true,
    async run (ctx) {
      attempts.push(ctx.job.attempts)
      if (ctx.job.attempts === 1) {
        await ctx.checkpoint({ copied: 42 })
        await abortableSleep(60_000, ctx.signal)
      }
      return { resumedFrom: ctx.job.checkpoint }
    }
  }
  let cleanups = 0
  const fragile: JobHandler = {
    async run (ctx) { await abortableSleep(60_000, ctx.signal) },
    async cleanup () { cleanups++ }
  }
  const doomed = await startEngine(t, app, { server_start: resumable, server_stop: fragile }, { databaseUrl, leaseSeconds: 2 })
  const a = await enqueue({ operation: 'server_start' })
  const b = await enqueue({ operation: 'server_stop' })
  await waitForJob(app, a.id, { states: ['started'] })
  await waitForJob(app, b.id, { states: ['started'] })
  await eventuallyRow(a.id, r => r.checkpoint !== null)
  const crashedAt = Date.now()
  doomed.crash() // stops heartbeating without writing anything, like SIGKILL
  const rescuer = await startEngine(t, app, { server_start: resumable, server_stop: fragile }, { databaseUrl, leaseSeconds: 2 })
  const ja = await waitForJob(app, a.id)
  const jb = await waitForJob(app, b.id)
  const took = Date.now() - crashedAt
  t.ok(took < 2000 + 3000, `taken over once the 2 s lease expired (${took} ms)`)
  t.equal(ja.state, 'success', 'a resumable job is run again')
  t.equal(ja.attempts, 2)
  t.same(ja.result, { resumedFrom: { copied: 42 } }, 'with its checkpoint')
  t.same(attempts, [1, 2])
  t.equal(jb.state, 'error', 'a non-resumable job is failed cleanly')
  t.match(jb.error, { error_type: 'backend' })
  t.equal(cleanups, 1, 'and its cleanup ran')
  t.equal(jb.lockedBy, null)
  await rescuer.stop()
})

async function eventuallyRow (id: string, ok: (r: any) => boolean) {
  const deadline = Date.now() + 10_000
  for (;;) {
    const r = await app.prisma.job.findUnique({ where: { id } })
    if (r && ok(r)) return r
    if (Date.now() > deadline) throw new Error('row never matched')
    await sleep(25)
  }
}

t.test('graceful stop gives running jobs back; a resumable job resumes elsewhere at once', async t => {
  const handler: JobHandler = {
    resumable: true,
    async run (ctx) {
      if (ctx.job.attempts === 1) await abortableSleep(60_000, ctx.signal)
      return 'ok'
    }
  }
  const first = await startEngine(t, app, { server_delete: handler }, { databaseUrl, leaseSeconds: 30 })
  const { id } = await enqueue({ operation: 'server_delete' })
  await waitForJob(app, id, { states: ['started'] })
  await first.stop()
  const row = await app.prisma.job.findUniqueOrThrow({ where: { id } })
  t.equal(row.state, 'queued', 'released to the queue')
  t.equal(row.lockedBy, null)
  const stoppedAt = Date.now()
  await startEngine(t, app, { server_delete: handler }, { databaseUrl, leaseSeconds: 30 })
  const done = await waitForJob(app, id)
  t.equal(done.state, 'success')
  t.ok(Date.now() - stoppedAt < 5000, `without waiting for the 30 s lease (${Date.now() - stoppedAt} ms)`)
})

t.test('a job for an operation without a handler fails instead of hanging', async t => {
  await startEngine(t, app, {}, { databaseUrl })
  const { id } = await enqueue({ operation: 'drive_download', id: randomUUID() })
  const row = await waitForJob(app, id)
  t.equal(row.state, 'error')
  t.match(row.error, { error_message: /no handler/ })
})

t.test('a transient storage failure (Ceph unreachable) is retried with backoff, then fails with a clear error', async t => {
  let runs = 0
  const flaky: JobHandler = {
    resumable: true,
    async run () {
      if (++runs < 3) throw new StorageError('UNAVAILABLE', 'the cluster does not answer')
      return { ok: true }
    }
  }
  const down: JobHandler = {
    resumable: true,
    async run () { throw new StorageError('UNAVAILABLE', 'the cluster does not answer') }
  }
  await startEngine(t, app, { drive_resize: flaky, drive_delete: down }, { databaseUrl })
  const a = await enqueue({ operation: 'drive_resize' })
  const b = await enqueue({ operation: 'drive_delete', maxAttempts: 2 })
  const ok = await waitForJob(app, a.id, { timeoutMs: 30_000 })
  t.equal(ok.state, 'success', 'succeeded on the third attempt')
  t.equal(ok.attempts, 3)
  t.equal(runs, 3)
  const failed = await waitForJob(app, b.id, { timeoutMs: 30_000 })
  t.equal(failed.state, 'error')
  t.equal(failed.attempts, 2, 'retried up to max_attempts')
  t.match(failed.error, { error_type: 'backend', error_message: /storage is unavailable/ })
})

/**
 * A resumable run that throws `error` on its first attempt, and a failing job whose cleanup throws
 * it on its first attempt: the run must succeed on attempt 2, and the cleanup run again before the
 * first attempt's failure is recorded. Returns both jobs' log lines.
 */
async function transientOnce (t: Test, error: Error, cause: string): Promise<{ runLog: string[], cleanupLog: string[] }> {
  let runs = 0
  const retried: JobHandler = {
    resumable: true,
    async run () {
      if (++runs < 2) throw error
      return { ok: true }
    }
  }
  const cleanups: number[] = []
  const failing: JobHandler = {
    async run () { throw new JobFailure('the copy failed') },
    async cleanup (ctx) {
      cleanups.push(ctx.job.attempts)
      if (ctx.job.attempts === 1) throw error
    }
  }
  await startEngine(t, app, { drive_resize: retried, drive_clone: failing }, { databaseUrl })
  const a = await enqueue({ operation: 'drive_resize' })
  const b = await enqueue({ operation: 'drive_clone' })
  const ok = await waitForJob(app, a.id, { timeoutMs: 30_000 })
  t.equal(ok.state, 'success', `the run was retried after ${cause}`)
  t.equal(ok.attempts, 2)
  const failed = await waitForJob(app, b.id, { timeoutMs: 30_000 })
  t.equal(failed.state, 'error')
  t.same(cleanups, [1, 2], 'the cleanup ran again on the next attempt, and only then was the failure recorded')
  t.equal(failed.attempts, 2)
  t.match(failed.error, { error_type: 'backend', error_message: 'the copy failed' }, 'with the first attempt\'s reason')
  const lines = async (jobId: string) => (await app.prisma.jobLogLine.findMany({ where: { jobId }, orderBy: { id: 'asc' } })).map(l => l.line)
  return { runLog: await lines(a.id), cleanupLog: await lines(b.id) }
}

t.test('the database out of reach (pool exhausted) is a transient failure: the run is retried, and a cleanup that cannot reach it runs again later instead of leaving its work half-undone', async t => {
  // what pg's pool and Prisma throw when no connection comes in time
  const { cleanupLog } = await transientOnce(t, new Error('timeout exceeded when trying to connect'), 'the pool timeout')
  t.ok(cleanupLog.some(l => /cleanup could not reach the database; the job runs again/.test(l)), 'the job log says why it ran again')
})

/** A real deadlock between two sessions of the test database: the error PostgreSQL raises (40P01). */
async function deadlockError (): Promise<Error> {
  const [a, b] = [new pg.Client({ connectionString: databaseUrl }), new pg.Client({ connectionString: databaseUrl })]
  await a.connect()
  await b.connect()
  try {
    await a.query('CREATE TABLE IF NOT EXISTS deadlock_probe (id int PRIMARY KEY); INSERT INTO deadlock_probe VALUES (1), (2) ON CONFLICT DO NOTHING')
    await a.query('BEGIN')
    await b.query('BEGIN')
    await a.query('UPDATE deadlock_probe SET id = id WHERE id = 1')
    await b.query('UPDATE deadlock_probe SET id = id WHERE id = 2')
    // each now waits for the other's row: PostgreSQL ends one of them
    const outcomes = await Promise.allSettled([a.query('UPDATE deadlock_probe SET id = id WHERE id = 2'), b.query('UPDATE deadlock_probe SET id = id WHERE id = 1')])
    const lost = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected')
    if (!lost) throw new Error('no deadlock')
    return lost.reason as Error
  } finally {
    await a.query('ROLLBACK').catch(() => {})
    await b.query('ROLLBACK').catch(() => {})
    await a.end()
    await b.end()
  }
}

t.test('a transaction that lost to a simultaneous one (a real deadlock) is a transient failure: the run is retried, a cleanup runs again', async t => {
  const deadlock = await deadlockError()
  t.equal((deadlock as { code?: string }).code, '40P01', 'PostgreSQL detected the deadlock')
  const { runLog, cleanupLog } = await transientOnce(t, deadlock, 'the deadlock')
  t.ok(runLog.some(l => /transient failure \(a simultaneous transaction conflicted with it in the database\); retrying in 2 s/.test(l)), 'the job log says why it ran again')
  t.ok(cleanupLog.some(l => /cleanup could not finish: a simultaneous transaction conflicted with it; the job runs again/.test(l)), 'the cleanup\'s log says why')
})

t.test('on its last attempt too, a cleanup that cannot reach the database or the storage runs again, and only then is the failure recorded', async t => {
  const cleanups: number[] = []
  const failing: JobHandler = {
    async run () { throw new JobFailure('the resize failed') },
    async cleanup (ctx) {
      cleanups.push(ctx.job.attempts)
      if (ctx.job.attempts === 1) throw new Error('timeout exceeded when trying to connect')
      if (ctx.job.attempts === 2) throw new StorageError('UNAVAILABLE', 'the cluster does not answer')
    }
  }
  await startEngine(t, app, { drive_resize: failing }, { databaseUrl })
  const { id } = await enqueue({ operation: 'drive_resize', maxAttempts: 1 })
  const failed = await waitForJob(app, id, { timeoutMs: 30_000 })
  t.equal(failed.state, 'error')
  t.same(cleanups, [1, 2, 3], 'the cleanup ran until it could, past max_attempts (1)')
  t.match(failed.error, { error_type: 'backend', error_message: 'the resize failed' }, 'the first attempt\'s reason')
  const log = (await app.prisma.jobLogLine.findMany({ where: { jobId: id }, orderBy: { id: 'asc' } })).map(l => l.line)
  t.ok(log.some(l => /cleanup could not reach the database; the job runs again in 2 s/.test(l)), 'the job log says why it ran again')
  t.ok(log.some(l => /cleanup could not reach the drive storage; the job runs again in 4 s/.test(l)), 'both times')
})

t.test('a requeued retry publishes exactly one change event: the job is queued again, then started', async t => {
  // what a client sees: queued → started → queued (waiting for its backoff) → started → success,
  // one event for each; the requeue used to publish none, so SSE clients kept showing `started`
  const id = randomUUID()
  const heard: string[] = []
  const unsubscribe = app.events.subscribe(alice.id, (e, frame) => {
    if (e.resourceId !== id) return
    heard.push((frame.object as { state: string }).state)
  })
  t.teardown(unsubscribe)
  // each run waits until its `started` was delivered, so every frame shows the state it announced
  const heardStarted = (n: number) => eventually(async () => heard.filter(s => s === 'started').length >= n || undefined)
  const flaky: JobHandler = {
    resumable: true,
    async run (ctx) {
      await heardStarted(ctx.job.attempts)
      if (ctx.job.attempts === 1) throw new StorageError('UNAVAILABLE', 'the cluster does not answer')
      return { ok: true }
    }
  }
  await enqueue({ id, operation: 'drive_resize' })
  await eventually(async () => heard.length >= 1 || undefined)
  await startEngine(t, app, { drive_resize: flaky }, { databaseUrl })
  // the retry is due 2 s after the failure: the queued row is there to be seen meanwhile
  const queued = await eventually(async () => {
    const row = await app.prisma.job.findUniqueOrThrow({ where: { id } })
    return row.attempts === 1 && row.state === 'queued' ? row : undefined
  })
  t.equal(queued.lockedBy, null, 'requeued without a lease')
  const done = await waitForJob(app, id, { timeoutMs: 30_000 })
  t.equal(done.state, 'success')
  t.equal(done.attempts, 2, 'ran twice')
  t.equal(await app.prisma.event.count({ where: { resourceId: id } }), 5, 'enqueue, claim, requeue, claim, finish: one event each')
  await eventually(async () => heard.length >= 5 || undefined)
  t.same(heard, ['queued', 'started', 'queued', 'started', 'success'], 'subscribers heard every state once, in order')
})

t.test('a last description alone ("copied 10 GiB in 4.2 s") is recorded with the job\'s end, not written on its own', async t => {
  const quick: JobHandler = {
    async run (ctx) {
      ctx.progress({ description: 'did the thing' })
      return { ok: true }
    }
  }
  const slow: JobHandler = {
    async run (ctx) {
      // bytes as well: written before the end, as any progress is
      ctx.progress({ bytesDone: 5, bytesTotal: 10, description: 'half way' })
      return { ok: true }
    }
  }
  await startEngine(t, app, { server_start: quick, server_stop: slow }, { databaseUrl })
  const a = await enqueue({ operation: 'server_start' })
  const b = await enqueue({ operation: 'server_stop' })
  const doneA = await waitForJob(app, a.id)
  const doneB = await waitForJob(app, b.id)
  t.equal(doneA.state, 'success')
  t.equal(doneA.description, 'did the thing', 'the description is recorded')
  t.equal(await app.prisma.event.count({ where: { resourceId: a.id } }), 3, 'enqueue, claim, finish: no event of a progress write')
  t.equal(doneB.description, 'half way')
  t.equal(await app.prisma.event.count({ where: { resourceId: b.id } }), 4, 'a progress with bytes is written (and published) before the end')
})

t.test('a graceful stop publishes the job going back to queued, once', async t => {
  const handler: JobHandler = {
    resumable: true,
    async run (ctx) { await abortableSleep(60_000, ctx.signal) }
  }
  const engine = await startEngine(t, app, { server_delete: handler }, { databaseUrl, leaseSeconds: 30 })
  const { id } = await enqueue({ operation: 'server_delete' })
  await waitForJob(app, id, { states: ['started'] })
  const before = await app.prisma.event.count({ where: { resourceId: id } })
  await engine.stop()
  t.equal((await app.prisma.job.findUniqueOrThrow({ where: { id } })).state, 'queued')
  t.equal(await app.prisma.event.count({ where: { resourceId: id } }) - before, 1, 'one event for the release')
  await app.prisma.job.update({ where: { id }, data: { state: 'cancelled', finishedAt: new Date() } })
})
