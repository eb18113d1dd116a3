/**
 * Job engine throughput beside graphile-worker, in one run:
 *   `npx tsx bench/jobs-throughput.ts [--jobs 5000] [--concurrency 4,16] [--batch 500] [--wake 40] [--rounds 3] [--enqueue-rounds 7]`
 *
 * For each concurrency, `rounds` rounds of the three contenders below in turn (the order flips each
 * round; figures are medians, the ratio the median of the rounds' own ratios), each run on its own
 * fresh database on the same PostgreSQL (DATABASE_URL, default
 * postgresql://postgres@127.0.0.1:5432/postgres), created and dropped here:
 *   load      `jobs` no-op jobs with nothing running (clonejobs `enqueueJobs` in batches of
 *             `batch`, graphile-worker `add_jobs`); the jobs/s is printed but the ratio comes from
 *             the enqueue rounds below.
 *   claim+finish  then start one engine of `concurrency` workers; jobs/s from the start call to
 *             the last job recorded finished in the database. clonejobs runs twice: as it ships
 *             (prefetch: while handlers are short it claims more jobs that wait in the process for
 *             a slot, never running more than `concurrency` at once) and with `prefetch: 0`, which
 *             claims only for free slots like graphile-worker 0.16 does.
 *   wake-up   with the engine idle (poll 1 s, so only a NOTIFY can be faster), `wake` single jobs
 *             enqueued one by one: commit → handler start, p50/p95 (issue 18: < 20 ms p50).
 * Then bulk enqueue, `enqueue-rounds` rounds, the engines in turn (see benchEnqueue): `jobs` jobs
 * in batches of `batch`, standalone (clonejobs `enqueueJobs` on the app's pg pool, as POST /drives/
 * does: one atomic statement with job_resources, events and NOTIFYs; graphile `add_jobs`, the
 * statement behind its `addJobs`) and inside a transaction (BEGIN, the statement, COMMIT on a plain
 * pg client, both engines), plus clonejobs inside Prisma's interactive transaction (the services'
 * path, shown beside, not in the ratio); the median of the rounds' ratios, and the CPU each spends
 * per 1,000 jobs.
 * clonejobs's change events are counted per job from the NOTIFYs on the events channel (by a child
 * process, bench/event-counter.ts, so counting costs the measured process nothing) and
 * compared with the `events` rows: every job must show the same count, none lost or doubled.
 * Figures only (no pass/fail); then the ratios in detail, one line per concurrency and one for the
 * enqueue; the last lines are the summary, per concurrency: `claim+finish X.XXx, enqueue Y.YYx`
 * (standalone enqueue).
 */
import { spawnTied } from './children.ts'
import fs from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { Logger, makeWorkerUtils, run as runGraphile, type Runner } from 'graphile-worker'
import * as enqueueModule from '../src/engine/enqueue.ts'
import type { EnqueueInput } from '../src/engine/enqueue.ts'
import type { Operation } from '../src/engine/types.ts'
import { buildTestApp, createUser } from '../test/helpers/app.ts'
import { startEngine } from '../test/helpers/jobs.ts'
import { registerRun, stopDaemon, unregisterRun } from '../test/setup/test-db.ts'

const { values: args } = parseArgs({
  options: {
    jobs: { type: 'string', default: '5000' },
    concurrency: { type: 'string', default: '4,16' },
    batch: { type: 'string', default: '500' },
    wake: { type: 'string', default: '40' },
    'enqueue-rounds': { type: 'string', default: '7' },
    rounds: { type: 'string', default: '3' }
  }
})
const total = Math.max(1, Number(args.jobs))
const concurrencies = args.concurrency.split(',').map(Number).filter(n => n > 0)
const batch = Math.max(1, Number(args.batch))
const wakeSamples = Math.max(0, Number(args.wake))
const enqueueRounds = Math.max(1, Number(args['enqueue-rounds']))
const rounds = Math.max(1, Number(args.rounds))
process.env.DATABASE_URL ??= 'postgresql://postgres@127.0.0.1:5432/postgres'
const adminUrl = process.env.DATABASE_URL

const load = () => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))
const pct = (xs: number[], p: number) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * p))] ?? NaN }
const f1 = (x: number) => x.toFixed(1)

interface Result { enqueuePerS: number, claimPerS: number, wake: number[], note: string, cpu: string, enqueueCpu: string }

/** CPU seconds used so far by every `postgres` process of this machine (utime + stime, /proc). */
function postgresCpuS (): number {
  const tick = 100 // USER_HZ on Linux
  let sum = 0
  for (const pid of fs.readdirSync('/proc').filter(p => /^\d+$/.test(p))) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
      const close = stat.lastIndexOf(')')
      if (!stat.slice(stat.indexOf('(') + 1, close).startsWith('postgres')) continue
      const f = stat.slice(close + 2).split(' ')
      sum += (Number(f[11]) + Number(f[12])) / tick
    } catch {}
  }
  return sum
}

/**
 * Where claim+finish's CPU goes, per 1,000 jobs: this Node process (engine, pg client, listeners)
 * and PostgreSQL (every backend of the machine, so only meaningful when nothing else runs).
 */
function cpuMeter (): () => string {
  const node0 = process.cpuUsage()
  const pg0 = postgresCpuS()
  return () => {
    const node = process.cpuUsage(node0)
    const per = 1000 / total
    return `CPU per 1,000 jobs: node ${((node.user + node.system) / 1e3 * per).toFixed(0)} ms, postgres ${((postgresCpuS() - pg0) * 1000 * per).toFixed(0)} ms`
  }
}

type Teardowns = Array<() => Promise<void> | void>
const scope = (list: Teardowns) => ({ teardown: (fn: () => Promise<void> | void) => { list.push(fn) } })
async function unwind (list: Teardowns): Promise<void> {
  for (const fn of list.splice(0).reverse()) await fn()
}

// the bulk enqueue path, when the engine has one (issue 12); the per-job path otherwise
const bulk = (enqueueModule as Record<string, unknown>).enqueueJobs as ((tx: unknown, inputs: EnqueueInput[]) => Promise<unknown>) | undefined

async function benchClonejobs (concurrency: number, prefetch?: number): Promise<Result> {
  const td: Teardowns = []
  try {
    const t = scope(td)
    const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
    const user = await createUser(app)

    // every change event NOTIFY, counted per resource id
    // counted in a child process (bench/event-counter.ts), so the count costs this process nothing
    const counter = spawnTied(process.execPath, [...process.execArgv, fileURLToPath(new URL('./event-counter.ts', import.meta.url)), databaseUrl], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    td.push(() => { counter.kill() })
    await new Promise<void>((resolve, reject) => { counter.once('message', () => resolve()); counter.once('exit', () => reject(new Error('the event counter exited'))) })
    const report = () => new Promise<Map<string, number>>(resolve => {
      counter.once('message', (pairs) => resolve(new Map(pairs as Array<[string, number]>)))
      counter.send('report')
    })

    const input = (i: number): EnqueueInput => ({ ownerId: user.id, operation: 'bench_noop' as Operation, params: { i } })
    // standalone, like add_jobs called on its own: one atomic statement per batch
    let t0 = performance.now()
    const enqueueCpu = cpuMeter()
    for (let done = 0; done < total; done += batch) {
      const n = Math.min(batch, total - done)
      if (bulk) await bulk(app.dbPool, Array.from({ length: n }, (_, k) => input(done + k)))
      else {
        await app.prisma.$transaction(async tx => {
          for (let k = 0; k < n; k++) await enqueueModule.enqueueJob(tx, input(done + k))
        }, { timeout: 120_000 })
      }
    }
    const enqueueMs = performance.now() - t0
    const enqueueCpuLine = enqueueCpu()

    let finished = 0
    let allRan!: () => void
    const ran = new Promise<void>(resolve => { allRan = resolve })
    let wakeStarted: (() => void) | undefined
    const handlers = {
      bench_noop: { async run () { if (++finished === total) allRan(); return null } },
      bench_wake: { async run () { wakeStarted?.(); return null } }
    }
    t0 = performance.now()
    const cpu = cpuMeter()
    await startEngine(t, app, handlers, { databaseUrl, concurrency, pollMs: 1000, prefetch })
    await ran
    // the finish is written just after run() returns
    while (await app.prisma.job.count({ where: { operation: 'bench_noop', state: { not: 'success' } } }) > 0) await sleep(5)
    const claimMs = performance.now() - t0
    const cpuLine = cpu()

    // idle engine: commit of one job → its handler starts
    const wake: number[] = []
    for (let i = 0; i < wakeSamples; i++) {
      await sleep(20 + Math.random() * 30)
      const started = new Promise<number>(resolve => { wakeStarted = () => resolve(performance.now()) })
      await app.prisma.$transaction(tx => enqueueModule.enqueueJob(tx, { ownerId: user.id, operation: 'bench_wake' as Operation }))
      const committed = performance.now()
      wake.push(await started - committed)
    }
    await sleep(200) // the last change events arrive
    const perJob = await report()

    // change events of the bulk jobs: one count for all, as many NOTIFYs as events rows
    const rows = await app.prisma.event.count({ where: { resourceType: 'jobs' } })
    const notified = [...perJob.values()].reduce((a, b) => a + b, 0)
    const histogram = new Map<number, number>()
    const noopIds = await app.prisma.job.findMany({ where: { operation: 'bench_noop' }, select: { id: true } })
    for (const { id } of noopIds) { const n = perJob.get(id) ?? 0; histogram.set(n, (histogram.get(n) ?? 0) + 1) }
    const hist = [...histogram].sort((a, b) => a[0] - b[0]).map(([n, jobs]) => `${jobs} jobs x ${n}`).join(', ')
    const exact = histogram.size === 1 && notified === rows
    const note = `change events: ${hist} (events NOTIFYed ${notified}, events rows ${rows}) ${exact ? 'exact' : 'NOT EXACT'}; enqueue path: ${bulk ? 'enqueueJobs (bulk)' : `enqueueJob x ${batch} per transaction (no bulk path in src/jobs/enqueue.ts)`}`
    return { enqueuePerS: total / enqueueMs * 1000, claimPerS: total / claimMs * 1000, wake, note, cpu: cpuLine, enqueueCpu: enqueueCpuLine }
  } finally {
    await unwind(td)
  }
}

async function benchGraphile (concurrency: number): Promise<Result> {
  const td: Teardowns = []
  const name = `clonejobs_bench_gw_${process.pid}_${concurrency}`
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  td.push(() => admin.end())
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
  await admin.query(`CREATE DATABASE ${name}`)
  td.push(async () => {
    // graphile's runner ends its pool lazily: a forced drop before that crashes its idle clients
    for (let i = 0; i < 100; i++) {
      if (Number((await admin.query('SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1', [name])).rows[0].n) === 0) break
      await sleep(50)
    }
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
  })
  const u = new URL(adminUrl)
  u.pathname = '/' + name
  const connectionString = u.toString()
  const logger = new Logger(() => () => {})
  try {
    const utils = await makeWorkerUtils({ connectionString, logger })
    td.push(() => utils.release())
    await utils.migrate()
    const db = new pg.Client({ connectionString })
    await db.connect()
    td.push(() => db.end())

    const addJobs = 'SELECT graphile_worker.add_jobs(array(SELECT json_populate_recordset(null::graphile_worker.job_spec, $1::json)))'
    let t0 = performance.now()
    const enqueueCpu = cpuMeter()
    for (let done = 0; done < total; done += batch) {
      const specs = Array.from({ length: Math.min(batch, total - done) }, (_, k) => ({ identifier: 'bench_noop', payload: { i: done + k } }))
      await db.query(addJobs, [JSON.stringify(specs)])
    }
    const enqueueMs = performance.now() - t0
    const enqueueCpuLine = enqueueCpu()

    let finished = 0
    let allRan!: () => void
    const ran = new Promise<void>(resolve => { allRan = resolve })
    let wakeStarted: (() => void) | undefined
    t0 = performance.now()
    const cpu = cpuMeter()
    const runner: Runner = await runGraphile({
      connectionString,
      logger,
      concurrency,
      maxPoolSize: concurrency + 2,
      pollInterval: 1000,
      noHandleSignals: true,
      taskList: {
        bench_noop: async () => {},
        bench_wake: async () => { wakeStarted?.() }
      }
    })
    td.push(() => runner.stop())
    runner.events.on('job:complete', ({ job }) => { if (job.task_identifier === 'bench_noop' && ++finished === total) allRan() })
    await ran
    while (Number((await db.query("SELECT count(*) AS n FROM graphile_worker.jobs WHERE task_identifier = 'bench_noop'")).rows[0].n) > 0) await sleep(5)
    const claimMs = performance.now() - t0
    const cpuLine = cpu()

    const wake: number[] = []
    for (let i = 0; i < wakeSamples; i++) {
      await sleep(20 + Math.random() * 30)
      const started = new Promise<number>(resolve => { wakeStarted = () => resolve(performance.now()) })
      await db.query("SELECT graphile_worker.add_job('bench_wake', '{}'::json)")
      const committed = performance.now()
      wake.push(await started - committed)
    }
    return { enqueuePerS: total / enqueueMs * 1000, claimPerS: total / claimMs * 1000, wake, note: `enqueue path: add_jobs, ${batch} jobs a call`, cpu: cpuLine, enqueueCpu: enqueueCpuLine }
  } finally {
    await unwind(td)
  }
}

/** Per-round throughputs (jobs/s) of one way of enqueueing, and the CPU it used in all. */
interface EnqueueSeries { perS: number[], nodeMs: number, pgMs: number, jobs: number }
const series = (): EnqueueSeries => ({ perS: [], nodeMs: 0, pgMs: 0, jobs: 0 })

/** Times `fn` (which enqueues `total` jobs) into `s`, with the CPU this process and PostgreSQL spent. */
async function timedEnqueue (s: EnqueueSeries, fn: () => Promise<void>): Promise<void> {
  const node0 = process.cpuUsage()
  const pg0 = postgresCpuS()
  const t0 = performance.now()
  await fn()
  s.perS.push(total / (performance.now() - t0) * 1000)
  const node = process.cpuUsage(node0)
  s.nodeMs += (node.user + node.system) / 1e3
  s.pgMs += (postgresCpuS() - pg0) * 1000
  s.jobs += total
}

/**
 * Bulk enqueue, both engines in turn for `rounds` rounds (the order flips every round), each
 * round `total` jobs in batches of `batch` five ways: standalone (clonejobs `enqueueJobs` on the
 * app's pg pool, one atomic statement; graphile `add_jobs` on its own), inside a transaction on a
 * plain pg client (BEGIN, the statement, COMMIT: the path of a request that writes its domain rows
 * with its jobs), and clonejobs inside Prisma's interactive transaction (what the services that
 * enqueue with Prisma-written domain rows pay; printed, not in the ratio). The jobs are parked a
 * year out, so nothing runs them; each way starts from empty job tables (TRUNCATE, not timed), as
 * on a fresh database. A single enqueue phase lasts a fraction of a second, so one
 * pause of a shared machine moves it a lot: the ratio is the median of the rounds' own ratios.
 */
async function benchEnqueue (rounds: number): Promise<{ cj: EnqueueSeries, cjTx: EnqueueSeries, cjPrisma: EnqueueSeries, gw: EnqueueSeries, gwTx: EnqueueSeries }> {
  const td: Teardowns = []
  try {
    const { app } = await buildTestApp(scope(td), { runWorkers: false })
    const user = await createUser(app)
    const name = `clonejobs_bench_gwq_${process.pid}`
    const admin = new pg.Client({ connectionString: adminUrl })
    await admin.connect()
    td.push(() => admin.end())
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    await admin.query(`CREATE DATABASE ${name}`)
    td.push(() => admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).then(() => {}))
    const u = new URL(adminUrl)
    u.pathname = '/' + name
    const utils = await makeWorkerUtils({ connectionString: u.toString(), logger: new Logger(() => () => {}) })
    await utils.migrate()
    await utils.release()
    const db = new pg.Client({ connectionString: u.toString() })
    await db.connect()
    td.push(() => db.end())

    const parked = new Date(Date.now() + 365 * 24 * 3600 * 1000)
    const inputs = (from: number, n: number): EnqueueInput[] => Array.from({ length: n }, (_, k) => ({ ownerId: user.id, operation: 'bench_noop' as Operation, params: { i: from + k }, runAt: parked }))
    const specs = (from: number, n: number) => JSON.stringify(Array.from({ length: n }, (_, k) => ({ identifier: 'bench_noop', payload: { i: from + k }, run_at: parked.toISOString() })))
    const addJobs = 'SELECT graphile_worker.add_jobs(array(SELECT json_populate_recordset(null::graphile_worker.job_spec, $1::json)))'
    const batches = async (fn: (from: number, n: number) => Promise<unknown>) => {
      for (let done = 0; done < total; done += batch) await fn(done, Math.min(batch, total - done))
    }
    const out = { cj: series(), cjTx: series(), cjPrisma: series(), gw: series(), gwTx: series() }
    // every way starts from empty tables, as on a fresh database (not timed)
    const emptyCj = () => app.prisma.$executeRawUnsafe('TRUNCATE jobs, events CASCADE')
    const emptyGw = () => db.query('TRUNCATE graphile_worker._private_jobs')
    const perJob = (tx: unknown, f: number, n: number) => (async () => { for (const i of inputs(f, n)) await enqueueModule.enqueueJob(tx as never, i) })()
    const enqueue = (on: unknown, f: number, n: number) => bulk ? bulk(on, inputs(f, n)) : perJob(on, f, n)
    // a client of the app's own pool, held for the way (as graphile's `db`)
    const cjClient = await app.dbPool.connect()
    td.push(() => cjClient.release())
    const ways: Array<() => Promise<void>> = [
      () => emptyCj().then(() => timedEnqueue(out.cj, () => batches((f, n) => enqueue(app.dbPool, f, n)))),
      () => emptyGw().then(() => timedEnqueue(out.gw, () => batches((f, n) => db.query(addJobs, [specs(f, n)])))),
      () => emptyCj().then(() => timedEnqueue(out.cjTx, () => batches(async (f, n) => { await cjClient.query('BEGIN'); await enqueue(cjClient, f, n); await cjClient.query('COMMIT') }))),
      () => emptyGw().then(() => timedEnqueue(out.gwTx, () => batches(async (f, n) => { await db.query('BEGIN'); await db.query(addJobs, [specs(f, n)]); await db.query('COMMIT') }))),
      () => emptyCj().then(() => timedEnqueue(out.cjPrisma, () => batches((f, n) => app.prisma.$transaction(tx => enqueue(tx, f, n), { timeout: 120_000 }))))
    ]
    // a first round of each warms up (prepared statements, Prisma's query compiler), not counted
    for (const way of ways) await way()
    for (const s of Object.values(out)) Object.assign(s, series())
    for (let r = 0; r < rounds; r++) for (const way of r % 2 === 0 ? ways : [...ways].reverse()) await way()
    return out
  } finally {
    await unwind(td)
  }
}

registerRun(process.pid)
const ratios: string[] = []
const claimRatios: Array<[number, number]> = []
try {
  console.log(`jobs-throughput: ${total} no-op jobs, concurrency ${concurrencies.join(' and ')}, batches of ${batch}, ${wakeSamples} wake-up samples; ${fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^processor/gm)?.length ?? '?'} cores`)
  console.log(`load average at start: ${load()}`)
  for (const c of concurrencies) {
    // the three ways in turn, `rounds` times (the order flips every round): a pause of the shared
    // machine then moves one sample of each, and the ratio is the median of the rounds' own ratios
    const runs: Record<'cj' | 'cj0' | 'gw', Result[]> = { cj: [], cj0: [], gw: [] }
    const ways: Array<['cj' | 'cj0' | 'gw', () => Promise<Result>]> = [
      ['cj', () => benchClonejobs(c)],
      // the same engine without its prefetch (claimed jobs waiting in the process for a slot), to show what it brings
      ['cj0', () => benchClonejobs(c, 0)],
      ['gw', () => benchGraphile(c)]
    ]
    for (let r = 0; r < rounds; r++) for (const [k, run] of r % 2 === 0 ? ways : [...ways].reverse()) runs[k].push(await run())
    console.log(`\nconcurrency ${c}, ${rounds} rounds (load average ${load()})`)
    const med = (xs: number[]) => pct(xs, 0.5)
    // the round whose claim+finish is the median: its CPU figures are printed
    const middle = (rs: Result[]) => [...rs].sort((a, b) => a.claimPerS - b.claimPerS)[(rs.length - 1) >> 1]
    const line = (label: string, rs: Result[]) => {
      const wake = rs.flatMap(r => r.wake)
      console.log(`  ${label.padEnd(16)} claim+finish p50 ${med(rs.map(r => r.claimPerS)).toFixed(0).padStart(6)} jobs/s   enqueue p50 ${med(rs.map(r => r.enqueuePerS)).toFixed(0).padStart(6)} jobs/s   idle wake-up commit→running p50 ${f1(pct(wake, 0.5))} ms p95 ${f1(pct(wake, 0.95))} ms`)
    }
    line('clonejobs', runs.cj)
    line('  no prefetch', runs.cj0)
    line('graphile-worker', runs.gw)
    const [cj, gw] = [middle(runs.cj), middle(runs.gw)]
    console.log(`  claim+finish ${cj.cpu.replace('CPU', 'CPU (clonejobs, median round)')}; graphile-worker ${gw.cpu.replace('CPU per 1,000 jobs: ', '')}`)
    console.log(`  enqueue ${cj.enqueueCpu.replace('CPU', 'CPU (clonejobs)')}; graphile-worker ${gw.enqueueCpu.replace('CPU per 1,000 jobs: ', '')}`)
    for (const note of new Set([...runs.cj, ...runs.cj0].map(r => r.note))) console.log(`  clonejobs ${note}`)
    const ratio = runs.cj.map((r, k) => r.claimPerS / runs.gw[k].claimPerS)
    const ratio0 = runs.cj0.map((r, k) => r.claimPerS / runs.gw[k].claimPerS)
    console.log(`  each round's ratio: ${ratio.map(x => x.toFixed(2)).join(' ')} (without prefetch ${ratio0.map(x => x.toFixed(2)).join(' ')})`)
    ratios.push(`clonejobs/graphile-worker: claim+finish ${med(ratio).toFixed(2)}x (concurrency ${c}, median of ${rounds} rounds; without prefetch ${med(ratio0).toFixed(2)}x)`)
    claimRatios.push([c, med(ratio)])
  }
  console.log(`\nbulk enqueue: ${enqueueRounds} rounds of ${total} jobs each way, in batches of ${batch}, the engines in turn (load average ${load()})`)
  const eq = await benchEnqueue(enqueueRounds)
  const med = (xs: number[]) => pct(xs, 0.5)
  const cpuOf = (s: EnqueueSeries) => `CPU per 1,000 jobs: node ${(s.nodeMs / s.jobs * 1000).toFixed(1)} ms, postgres ${(s.pgMs / s.jobs * 1000).toFixed(1)} ms`
  const pair = (label: string, alone: EnqueueSeries, tx: EnqueueSeries) =>
    console.log(`  ${label.padEnd(16)} standalone p50 ${med(alone.perS).toFixed(0).padStart(6)} jobs/s (${cpuOf(alone)})   in a transaction p50 ${med(tx.perS).toFixed(0).padStart(6)} jobs/s (${cpuOf(tx)})`)
  pair('clonejobs', eq.cj, eq.cjTx)
  pair('graphile-worker', eq.gw, eq.gwTx)
  console.log(`  clonejobs through Prisma's interactive transaction p50 ${med(eq.cjPrisma.perS).toFixed(0).padStart(6)} jobs/s (${cpuOf(eq.cjPrisma)})`)
  const roundRatios = (a: EnqueueSeries, b: EnqueueSeries) => a.perS.map((x, k) => x / b.perS[k])
  const alone = roundRatios(eq.cj, eq.gw)
  const inTx = roundRatios(eq.cjTx, eq.gwTx)
  const prismaTx = roundRatios(eq.cjPrisma, eq.gwTx)
  console.log(`  each round's ratio: standalone ${alone.map(x => x.toFixed(2)).join(' ')}; in a transaction ${inTx.map(x => x.toFixed(2)).join(' ')}; through Prisma's ${prismaTx.map(x => x.toFixed(2)).join(' ')}`)
  ratios.push(`clonejobs/graphile-worker: enqueue ${med(alone).toFixed(2)}x standalone, ${med(inTx).toFixed(2)}x in a transaction (median of ${enqueueRounds} rounds; through Prisma's transaction ${med(prismaTx).toFixed(2)}x)`)
  console.log(`\nload average at end: ${load()}`)
  for (const r of ratios) console.log(r)
  // the summary in the issue's form, one line per concurrency (the bulk enqueue is one figure: no worker runs then)
  for (const [c, x] of claimRatios) console.log(`clonejobs/graphile-worker: claim+finish ${x.toFixed(2)}x, enqueue ${med(alone).toFixed(2)}x (concurrency ${c})`)
} finally {
  if (unregisterRun(process.pid)) stopDaemon()
}
