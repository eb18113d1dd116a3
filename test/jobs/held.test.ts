// Request-held jobs through the engine (app.jobs.enqueueHeld / hold): heartbeated by the engine,
// one publish per finish, and a lost lease commits nothing.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { JobEngine } from '../../src/engine/engine.ts'
import { LeaseLost } from '../../src/engine/held.ts'
import { buildTestApp, createUser } from '../helpers/app.ts'
import { guardAnswer, holdThread } from '../helpers/jobs.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)

async function held () {
  const row = await app.prisma.$transaction(tx => app.jobs.enqueueHeld(tx, { ownerId: alice.id, operation: 'drive_upload', params: {} }))
  return app.jobs.hold(row, 100)
}

const eventsOf = (id: string) => app.prisma.event.count({ where: { resourceId: id } })

t.test('finish records the outcome with the caller\'s change and publishes it once', async t => {
  const job = await held()
  job.progress(50)
  await new Promise(resolve => setTimeout(resolve, 400))
  const row = await app.prisma.job.findUniqueOrThrow({ where: { id: job.id } })
  t.equal(row.state, 'started')
  t.equal(row.lockedBy, app.jobs.heldBy)
  t.equal(Number(row.bytesDone), 50)
  const before = await eventsOf(job.id)
  const key = `held-${randomUUID()}`
  await app.prisma.$transaction(async tx => {
    await tx.setting.create({ data: { key, value: 'done' } })
    await job.finish(tx, { state: 'success', result: { bytes: 100 } })
  })
  t.equal((await app.prisma.job.findUniqueOrThrow({ where: { id: job.id } })).state, 'success')
  t.ok(await app.prisma.setting.findUnique({ where: { key } }))
  t.equal(await eventsOf(job.id) - before, 1, 'one change event for the finish')
})

t.test('a lost lease aborts the holder and commits nothing', async t => {
  const job = await held()
  // another process took the job over (its lease had run out)
  await app.prisma.job.update({ where: { id: job.id }, data: { lockedBy: 'someone-else' } })
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the engine heartbeat did not notice')), 5000)
    job.signal.addEventListener('abort', () => { clearTimeout(timer); resolve() }, { once: true })
  })
  t.ok(job.signal.reason instanceof LeaseLost, 'the engine\'s heartbeat aborted the handle')
  const key = `held-${randomUUID()}`
  const err = await app.prisma.$transaction(async tx => {
    await tx.setting.create({ data: { key, value: 'half-made' } })
    await job.finish(tx, { state: 'success' })
  }).catch(e => e)
  t.ok(err instanceof LeaseLost)
  t.equal(await app.prisma.setting.findUnique({ where: { key } }), null, 'the domain change was rolled back')
  const row = await app.prisma.job.findUniqueOrThrow({ where: { id: job.id } })
  t.equal(row.state, 'started', 'the job is left to whoever holds it now')
  t.equal(row.lockedBy, 'someone-else')
})

t.test('a cancel request reaches the holder', async t => {
  const job = await held()
  await app.prisma.job.update({ where: { id: job.id }, data: { cancelRequested: true } })
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no cancel')), 5000)
    job.signal.addEventListener('abort', () => { clearTimeout(timer); resolve() }, { once: true })
  })
  t.equal(job.cancelled, true)
  await job.fail({ error_type: 'backend', error_message: 'x' })
  const row = await app.prisma.job.findUniqueOrThrow({ where: { id: job.id } })
  t.equal(row.state, 'cancelled')
})

t.test('a holder whose lease cannot be renewed is aborted locally before the lease ends, and commits nothing', async t => {
  // every heartbeat of this process fails (e.g. its database connection stalled)
  const faults = { heartbeat: () => { throw new Error('injected heartbeat failure') } }
  const engine = new JobEngine({ prisma: app.prisma, databaseUrl, log: app.log, concurrency: 1, leaseSeconds: 3, leaseMarginMs: 1000, faults })
  t.teardown(() => engine.stop())
  const row = await app.prisma.$transaction(tx => engine.enqueueHeld(tx, { ownerId: alice.id, operation: 'drive_upload', params: {} }))
  const heldAt = Date.now()
  const job = engine.hold(row, 100)
  const abortedAt = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the holder was never aborted')), 8000)
    job.signal.addEventListener('abort', () => { clearTimeout(timer); resolve(Date.now()) }, { once: true })
  })
  t.ok(job.signal.reason instanceof LeaseLost, 'aborted for want of a lease')
  const leased = await app.prisma.job.findUniqueOrThrow({ where: { id: job.id } })
  t.ok(leased.lockedUntil && abortedAt < leased.lockedUntil.getTime(), `before its lease ended (${leased.lockedUntil!.getTime() - abortedAt} ms to spare)`)
  t.ok(abortedAt - heldAt <= 3000 - 1000 + 500, `at lease minus margin (${abortedAt - heldAt} ms)`)
  job.progress(60)
  await new Promise(resolve => setTimeout(resolve, 400))
  const key = `held-${randomUUID()}`
  const err = await app.prisma.$transaction(async tx => {
    await tx.setting.create({ data: { key, value: 'half-made' } })
    await job.finish(tx, { state: 'success' })
  }).catch(e => e)
  t.ok(err instanceof LeaseLost, 'its finish is refused')
  t.equal(await app.prisma.setting.findUnique({ where: { key } }), null, 'and its domain change rolled back')
  const after = await app.prisma.job.findUniqueOrThrow({ where: { id: job.id } })
  t.equal(after.state, 'started', 'nothing was recorded')
  t.equal(Number(after.bytesDone), 0, 'no progress written after the abort')
})

t.test('guard(): a holder held up inside its fenced step past its lease is refused by the clock before its watchdog has run', async t => {
  const engine = new JobEngine({ prisma: app.prisma, databaseUrl, log: app.log, concurrency: 1, leaseSeconds: 2, leaseMarginMs: 500 })
  t.teardown(() => engine.stop())
  const row = await app.prisma.$transaction(tx => engine.enqueueHeld(tx, { ownerId: alice.id, operation: 'drive_upload', params: {} }))
  const job = engine.hold(row, 100)
  const check = () => guardAnswer(() => job.guard())
  const seen: Record<string, unknown> = {}
  // the step a request puts in place inside job.fenced (a copy renamed over the drive's image), with
  // the thread held up (a process stopped or swapped out) between the row lock and that step
  await job.fenced(async () => {
    seen.first = check()
    holdThread(2200)
    seen.held = check()
    seen.aborted = job.signal.aborted
  }).catch(() => {})
  t.same(seen, { first: 'allowed', held: 'LeaseLost', aborted: true },
    'allowed with its row locked; refused (LeaseLost, its signal aborted) once held up past its lease, though no timer had run')
  t.ok(job.signal.reason instanceof LeaseLost)
  t.equal(check(), 'LeaseLost', 'and refused from then on')
  // its row was still leased here (nobody could take it over while it was locked): the engine no
  // longer renews that lease, so it runs out and a worker takes the job over
  await new Promise(resolve => setTimeout(resolve, 2500))
  const [lease] = await app.prisma.$queryRaw<Array<{ expired: boolean, lockedBy: string | null }>>`SELECT locked_until < now() AS expired, locked_by AS "lockedBy" FROM jobs WHERE id = ${job.id}::uuid`
  t.same(lease, { expired: true, lockedBy: engine.heldBy }, 'its lease ran out, no longer renewed by the process that gave it up')
})
