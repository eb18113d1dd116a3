/**
 * Job engine throughput: `npx tsx bench/jobs-throughput.ts [jobs] [processes] [concurrency]`.
 *
 * On a fresh database (DATABASE_URL's server, else the embedded test server), enqueues `jobs`
 * (default 5000) jobs with a trivial handler, in transactions of 500, then starts `processes`
 * (default 1) engines of `concurrency` (default 4, the service default) workers each, every one
 * with its own LISTEN connection like a separate service process, and prints enqueued and
 * claimed+finished jobs per second. Figures only, no pass/fail.
 */
import { enqueueJob } from '../src/engine/enqueue.ts'
import type { Operation } from '../src/engine/types.ts'
import { buildTestApp, createUser } from '../test/helpers/app.ts'
import { startEngine } from '../test/helpers/jobs.ts'
import { registerRun, stopDaemon, unregisterRun } from '../test/setup/test-db.ts'

const total = Math.max(1, Number(process.argv[2] ?? 5000))
const processes = Math.max(1, Number(process.argv[3] ?? 1))
const concurrency = Math.max(1, Number(process.argv[4] ?? 4))

const teardowns: Array<() => Promise<void> | void> = []
const t = { teardown: (fn: () => Promise<void> | void) => { teardowns.push(fn) } }

registerRun(process.pid)
try {
  const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
  const user = await createUser(app)
  let enqueueMs = performance.now()
  for (let done = 0; done < total; done += 500) {
    await app.prisma.$transaction(async tx => {
      for (let i = done; i < Math.min(total, done + 500); i++) await enqueueJob(tx, { ownerId: user.id, operation: 'bench_noop' as Operation, params: { i } })
    }, { timeout: 60_000 })
  }
  enqueueMs = performance.now() - enqueueMs

  let finished = 0
  let resolveAll!: () => void
  const all = new Promise<void>(resolve => { resolveAll = resolve })
  const handler = { async run () { if (++finished === total) resolveAll(); return null } }
  const started = performance.now()
  for (let p = 0; p < processes; p++) await startEngine(t, app, { bench_noop: handler }, { databaseUrl, concurrency, pollMs: 1000 })
  await all
  // the last finish is recorded just after run() returns
  while (await app.prisma.job.count({ where: { state: { not: 'success' } } }) > 0) await new Promise(resolve => setTimeout(resolve, 10))
  const elapsed = (performance.now() - started) / 1000
  const events = await app.prisma.event.count()

  console.log(`jobs:                    ${total} (trivial handler)`)
  console.log(`enqueued in:             ${(enqueueMs / 1000).toFixed(2)} s (${(total / enqueueMs * 1000).toFixed(0)} jobs/s, transactions of 500, with job_resources + events + NOTIFY)`)
  console.log(`claimed + finished in:   ${elapsed.toFixed(2)} s (${(total / elapsed).toFixed(0)} jobs/s, ${processes} engine(s) x concurrency ${concurrency})`)
  console.log(`change events written:   ${events}`)
} finally {
  for (const fn of teardowns.reverse()) await fn()
  if (unregisterRun(process.pid)) stopDaemon()
}
