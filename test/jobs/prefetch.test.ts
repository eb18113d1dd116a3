// Prefetch: while handlers are short, the engine claims the next jobs while the last ones still
// run (they wait for a slot in the process), yet never runs more than `concurrency` handlers at
// once; a claimed job that waits too long, or is still waiting at shutdown, goes back to the queue
// as it was (attempt unused); long handlers turn prefetching off.
import t from 'tap'
import { enqueueJob } from '../../src/engine/enqueue.ts'
import type { JobHandler } from '../../src/engine/types.ts'
import { buildTestApp, createUser, eventually } from '../helpers/app.ts'
import { sleep, startEngine, waitForAllJobs } from '../helpers/jobs.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)

async function enqueue (operation: 'drive_create' | 'drive_resize', n: number): Promise<string[]> {
  return app.prisma.$transaction(async tx => {
    const ids: string[] = []
    for (let i = 0; i < n; i++) ids.push((await enqueueJob(tx, { ownerId: alice.id, operation })).id)
    return ids
  })
}

/** A handler held at a gate: counts the runs in progress, the most at once, and runs per job. */
function gated () {
  let open!: () => void
  const gate = new Promise<void>(resolve => { open = resolve })
  const s = { running: 0, max: 0, runs: new Map<string, number>(), open }
  const handler: JobHandler = {
    async run (ctx) {
      s.runs.set(ctx.job.id, (s.runs.get(ctx.job.id) ?? 0) + 1)
      s.running++
      s.max = Math.max(s.max, s.running)
      try {
        await Promise.race([gate, new Promise((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason), { once: true }))])
      } finally { s.running-- }
      return null
    }
  }
  return { s, handler }
}

const quick: JobHandler = { async run () { return null } }
const slow: JobHandler = { async run () { await sleep(60); return null } }

/** Jobs of `ids` the engine has claimed (leased, unfinished). */
const claimedBy = (workerId: string, ids: string[]) =>
  app.prisma.job.count({ where: { id: { in: ids }, lockedBy: workerId, state: { in: ['started', 'cancelling'] } } })

/**
 * An engine of concurrency 2 (prefetch 2) whose average run time is set by 4 warm-up jobs (`warm`),
 * then `n` jobs held at a gate: what each test starts from.
 */
async function gatedEngine (t: Parameters<typeof startEngine>[0], warm: JobHandler, n: number, prefetchTtlMs: number) {
  const { s, handler } = gated()
  const engine = await startEngine(t, app, { drive_create: warm, drive_resize: handler }, { databaseUrl, concurrency: 2, prefetch: 2, prefetchTtlMs })
  await enqueue('drive_create', 4)
  await waitForAllJobs(app)
  const ids = await enqueue('drive_resize', n)
  return { s, engine, ids }
}

t.test('short handlers: the next jobs are claimed while the last run, never more than `concurrency` run at once', async t => {
  const { s, engine, ids } = await gatedEngine(t, quick, 6, 60_000)
  await eventually(async () => s.running === 2 && await claimedBy(engine.workerId, ids) === 4)
  t.equal(await claimedBy(engine.workerId, ids), 4, '4 jobs claimed: 2 running, 2 waiting in the process for a slot')
  await sleep(100)
  t.equal(s.max, 2, 'only 2 handlers ran at once')
  s.open()
  await waitForAllJobs(app)
  const rows = await app.prisma.job.findMany({ where: { id: { in: ids } } })
  t.ok(rows.every(r => r.state === 'success' && r.attempts === 1), 'every job succeeded at its first attempt')
  t.ok([...s.runs.values()].every(n => n === 1) && s.runs.size === 6, 'each ran once')
  t.equal(s.max, 2, 'never more than 2 at once')
  await engine.stop()
})

t.test('a prefetched job waiting past its limit goes back to the queue as it was, and prefetching stops', async t => {
  const { s, engine, ids } = await gatedEngine(t, quick, 4, 150)
  const back = await eventually(async () => {
    if (s.running !== 2) return false
    const rows = await app.prisma.job.findMany({ where: { id: { in: ids }, state: 'queued' } })
    return rows.length === 2 ? rows : false
  })
  t.ok(back.every(r => r.attempts === 0 && r.startedAt === null && r.lockedBy === null && r.lockedUntil === null), 'given back unrun: attempt unused, never started, unlocked')
  // each went started (claimed) then queued (given back): one change event each, after the added one
  for (const r of back) {
    const changes = await app.prisma.event.count({ where: { resourceId: r.id } })
    t.equal(changes, 3, 'added, started, queued again: one event per change')
  }
  await sleep(400)
  t.equal(await app.prisma.job.count({ where: { id: { in: back.map(r => r.id) }, state: 'queued', attempts: 0 } }), 2, 'not claimed again while the slots stay busy (no claim/give-back loop)')
  s.open()
  await waitForAllJobs(app)
  const rows = await app.prisma.job.findMany({ where: { id: { in: ids } } })
  t.ok(rows.every(r => r.state === 'success' && r.attempts === 1), 'all succeed, the given-back ones at their first attempt')
  t.equal(s.max, 2)
  await engine.stop()
})

t.test('stopping gives back the jobs still waiting for a slot, unrun', async t => {
  const { s, engine, ids } = await gatedEngine(t, quick, 4, 60_000)
  await eventually(async () => s.running === 2 && await claimedBy(engine.workerId, ids) === 4)
  const waiting = ids.filter(id => !s.runs.has(id))
  t.equal(waiting.length, 2)
  await engine.stop()
  const rows = await app.prisma.job.findMany({ where: { id: { in: waiting } } })
  t.ok(rows.every(r => r.state === 'queued' && r.attempts === 0 && r.startedAt === null && r.lockedBy === null), 'the waiting ones are queued again, attempt unused')
  // a non-resumable handler fails a job whose earlier attempt ran; these never ran, so they succeed
  const next = await startEngine(t, app, { drive_resize: quick }, { databaseUrl, concurrency: 2 })
  await waitForAllJobs(app)
  const after = await app.prisma.job.findMany({ where: { id: { in: waiting } } })
  t.ok(after.every(r => r.state === 'success' && r.attempts === 1), 'run by the next process as first attempts')
  t.notOk(waiting.some(id => s.runs.has(id)), 'never run by the stopped one')
  await next.stop()
})

t.test('long handlers: nothing is claimed beyond the running jobs', async t => {
  const { s, engine, ids } = await gatedEngine(t, slow, 4, 60_000)
  await eventually(async () => s.running === 2)
  await sleep(300)
  t.equal(await claimedBy(engine.workerId, ids), 2, 'only the 2 running jobs are claimed')
  s.open()
  await waitForAllJobs(app)
  await engine.stop()
})
