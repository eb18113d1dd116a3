/**
 * API reads beside a bare Fastify + pg route, in one run:
 *   `npx tsx bench/api.ts [--connections 50] [--duration 10 | --amount N] [--drives 200] [--servers 20] [--jobs 0 [--others 20]]
 *                         [--only drives-list,mixed] [--rounds 1] [--statements 4] [--profile] [--log-level info] [--load 0]`
 *
 * The service app is built in this process as server.ts builds it (no test-mode response
 * validation; its request log at LOG_LEVEL, default info, written to /dev/null) with job workers
 * on, on a fresh database cloned from the migrated test template (DATABASE_URL, default the local
 * PostgreSQL). One account gets `drives` drives (bulk POST, waited until unmounted) and `servers`
 * servers with one of them mounted each, and `jobs` more finished top-level jobs (a job history of
 * the last three days, written by SQL: the purge keeps them), which the jobs list pages and counts;
 * with them, `others` other accounts get 100 such jobs each, as a database of a cloud holds many
 * accounts (`--others 0`: the account holds them all; see pageToSql in src/http/list-sql.ts for
 * what that did to PostgreSQL's plan cache). A bare Fastify app on its own port answers GET /drives/
 * with 20 rows of the same drives table through one `pg` query (no auth, no Prisma).
 *
 * autocannon runs in a child process (so the load generator does not share the servers' event
 * loop) with `connections` connections for `duration` s per scenario: each service scenario,
 * including the mixed load of issue 18 through autocannon's request rotation (20 requests: 7 list
 * drives, 4 list jobs, 3 create, 3 get drive, 2 get job, 1 drives detail), runs between two runs of
 * the bare route, and its ratio is to the mean of those two, made seconds apart. `--rounds N` runs
 * the scenarios N times over; the last line gives the medians of the rounds (ratio and p99).
 *
 * Every service request is timed in phases with root hooks (onRequest → preHandler = routing +
 * auth + validation; preHandler → preSerialization = handler: queries + wire objects;
 * preSerialization → onSend = serialisation), printed per scenario, with the CPU time per request
 * of this process and of the service's PostgreSQL backends (/proc/<pid>/stat of every connection
 * to the bench database but the bare route's; the bare route's backends for its own line): CPU per
 * request depends less on the machine's load than req/s. `--amount N` sends N requests per
 * scenario instead of running for `duration` s. `--profile` takes a CPU profile of this process
 * during each scenario, prints the top self-time functions and the self time per package, and
 * writes data/bench-api-<scenario>.cpuprofile.
 * `--load N` runs N CPU-burning processes for the whole run (bench/load.ts), the bare route and the
 * service alike, so a loaded figure can be made again.
 * Figures only, no pass/fail; the last line is the ratios.
 */
import { spawnTied } from './children.ts'
import fs from 'node:fs'
import { Session } from 'node:inspector/promises'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { monitorEventLoopDelay, PerformanceObserver, type IntervalHistogram } from 'node:perf_hooks'
import Fastify, { type FastifyInstance } from 'fastify'
import pg from 'pg'
import { describeLoad, startBurners } from './load.ts'
import { median } from './stats.ts'
import { app as service, serverOptions } from '../src/app.ts'
import { loadConfig } from '../src/config.ts'
import { createUser } from '../test/helpers/app.ts'
import { createTestDatabase } from '../test/helpers/db.ts'
import { registerRun, stopDaemon, unregisterRun } from '../test/setup/test-db.ts'

interface LoadRequest { method: string, path: string, headers?: Record<string, string>, body?: string }
interface LoadSpec { url: string, connections: number, duration: number, amount?: number, requests: LoadRequest[] }
interface LoadResult { rps: number, p50: number, p99: number, total: number, non2xx: number, errors: number }

// ------------------------------------------------------------------ load generator (child)
if (process.argv[2] === '--load-child') {
  const { default: autocannon } = await import('autocannon')
  const spec = JSON.parse(process.argv[3]) as LoadSpec
  const r = await autocannon({ url: spec.url, connections: spec.connections, duration: spec.duration, ...(spec.amount ? { amount: spec.amount } : {}), requests: spec.requests as never })
  // only answered requests count: a 503 (shed) or 429 is not throughput
  const ok = r.requests.total > 0 ? (r.requests.total - r.non2xx) / r.requests.total : 0
  const out: LoadResult = { rps: r.requests.average * ok, p50: r.latency.p50, p99: r.latency.p99, total: r.requests.total, non2xx: r.non2xx, errors: r.errors + r.timeouts }
  process.stdout.write(JSON.stringify(out))
  process.exit(0)
}

const { values: args } = parseArgs({
  options: {
    connections: { type: 'string', default: '50' },
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '2' },
    amount: { type: 'string' },
    statements: { type: 'string', default: '4' },
    drives: { type: 'string', default: '200' },
    jobs: { type: 'string', default: '0' },
    others: { type: 'string', default: '20' },
    servers: { type: 'string', default: '20' },
    only: { type: 'string' },
    profile: { type: 'boolean', default: false },
    load: { type: 'string', default: '0' },
    rounds: { type: 'string', default: '1' },
    'log-level': { type: 'string', default: process.env.LOG_LEVEL ?? 'info' }
  }
})
const connections = Math.max(1, Number(args.connections))
const duration = Math.max(1, Number(args.duration))
// seconds of the same load before each measured run (the bare route's too), not counted: the
// first scenario otherwise carried the service's JIT warm-up and heap growth in its p99
const warmup = Math.max(0, Number(args.warmup) || 0)
// a fixed number of requests per scenario instead of a duration (CPU per request compares runs)
const amount = args.amount === undefined ? undefined : Math.max(1, Number(args.amount))
const driveCount = Math.max(20, Number(args.drives))
const burners = Math.max(0, Math.floor(Number(args.load)) || 0)
const serverCount = Math.max(0, Math.min(driveCount, Number(args.servers)))
const historyCount = Math.max(0, Number(args.jobs))
const otherAccounts = Math.max(0, Math.floor(Number(args.others)) || 0)
const rounds = Math.max(1, Math.floor(Number(args.rounds)) || 1)
process.env.DATABASE_URL ??= 'postgresql://postgres@127.0.0.1:5432/postgres'

const load = () => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

function runLoad (spec: LoadSpec): Promise<LoadResult> {
  const execArgv = process.execArgv.filter(a => !a.startsWith('--cpu-prof') && !a.startsWith('--inspect'))
  return new Promise((resolve, reject) => {
    const child = spawnTied(process.execPath, [...execArgv, process.argv[1], '--load-child', JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout?.setEncoding('utf8').on('data', (d: string) => { out += d })
    child.on('error', reject)
    child.on('close', code => { code === 0 ? resolve(JSON.parse(out) as LoadResult) : reject(new Error(`load generator exited with ${String(code)}`)) })
  })
}

// ------------------------------------------------------------------ phase timing
interface Phases { auth: number[], handler: number[], serialise: number[], total: number[] }
let phases: Phases | undefined
const T = Symbol('bench.t')
type Timed = { [T]?: { start: number, pre?: number, ser?: number, send?: number } }

let inflight = 0
const busy = () => inflight > 0
function instrument (app: FastifyInstance): void {
  // counted on the socket level: an aborted request closes without onResponse
  app.server.on('request', (_req, res) => { inflight++; res.once('close', () => { inflight-- }) })
  // callback hooks, not async ones: the bench's own timing should cost the service as little as it can
  app.addHook('onRequest', (req, _reply, done) => { (req as Timed)[T] = { start: performance.now() }; done() })
  app.addHook('preHandler', (req, _reply, done) => { const t = (req as Timed)[T]; if (t) t.pre = performance.now(); done() })
  app.addHook('preSerialization', (req, _reply, payload, done) => { const t = (req as Timed)[T]; if (t) t.ser = performance.now(); done(null, payload) })
  app.addHook('onSend', (req, _reply, payload, done) => { const t = (req as Timed)[T]; if (t) t.send = performance.now(); done(null, payload) })
  app.addHook('onResponse', (req, _reply, done) => {
    const t = (req as Timed)[T]
    if (phases && t && t.pre !== undefined && t.ser !== undefined && t.send !== undefined) {
      phases.auth.push(t.pre - t.start)
      phases.handler.push(t.ser - t.pre)
      phases.serialise.push(t.send - t.ser)
      phases.total.push(performance.now() - t.start)
    }
    done()
  })
}
const quantile = (xs: number[], q: number) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * q))] ?? NaN }
const phaseLine = (p: Phases) => `service-side median: routing+auth+validation ${median(p.auth).toFixed(2)} ms, handler (queries + wire) ${median(p.handler).toFixed(2)} ms, serialisation ${median(p.serialise).toFixed(2)} ms, onRequest→onResponse ${median(p.total).toFixed(2)} ms (p99 ${quantile(p.total, 0.99).toFixed(1)} ms; ${p.total.length} requests)`

// ------------------------------------------------------------------ the tail: event loop and GC
// where a p99 far above the p50 comes from: the event loop's delay (a request waits unread while
// the loop runs something else) and the GC pauses in the scenario
interface Stalls { loop: IntervalHistogram, gcMs: number, gcMax: number, gcs: number }
let stalls: Stalls | undefined
new PerformanceObserver(list => {
  if (!stalls) return
  for (const e of list.getEntries()) { stalls.gcs++; stalls.gcMs += e.duration; stalls.gcMax = Math.max(stalls.gcMax, e.duration) }
}).observe({ entryTypes: ['gc'] })
function watchStalls (): void {
  stalls = { loop: monitorEventLoopDelay({ resolution: 5 }), gcMs: 0, gcMax: 0, gcs: 0 }
  stalls.loop.enable()
}
function stallLine (): string {
  const s = stalls!
  s.loop.disable()
  stalls = undefined
  const ms = (ns: number) => (ns / 1e6).toFixed(1)
  return `event-loop delay p50 ${ms(s.loop.percentile(50))} ms, p99 ${ms(s.loop.percentile(99))} ms, max ${ms(s.loop.max)} ms; GC ${s.gcs} pauses, ${s.gcMs.toFixed(0)} ms in all, the longest ${s.gcMax.toFixed(1)} ms`
}

// ------------------------------------------------------------------ database timing
// pg as the Prisma adapter uses it: Pool#query (wait for a connection + round trip) and
// Client#query (the round trip alone), per statement text; the bare route's pool is left out
interface DbStats { poolQueries: number, poolMs: number, clientMs: number, bySql: Map<string, { n: number, ms: number }> }
let dbStats: DbStats | undefined
let barePool: pg.Pool | undefined
const sqlOf = (a: unknown): string => typeof a === 'string' ? a : (a as { text?: string })?.text ?? '?'
// a statement's key, made once per text: the whitespace folding of a 2 KB statement on every
// query was 4% of the service's CPU on the jobs list (profiled), the bench's cost, not the service's
const keys = new Map<string, string>()
const keyOf = (text: string): string => {
  let key = keys.get(text)
  if (key === undefined) {
    key = text.replace(/\s+/g, ' ').trim().slice(0, 90)
    if (keys.size < 10_000) keys.set(text, key)
  }
  return key
}
function instrumentPg (): void {
  const poolQuery = pg.Pool.prototype.query as (...a: unknown[]) => unknown
  pg.Pool.prototype.query = function (this: pg.Pool, ...a: unknown[]) {
    const stats = dbStats
    if (!stats || this === barePool || typeof a[a.length - 1] === 'function') return poolQuery.apply(this, a)
    const t0 = performance.now()
    stats.poolQueries++
    const out = poolQuery.apply(this, a) as Promise<unknown>
    const done = () => { stats.poolMs += performance.now() - t0 }
    out.then(done, done)
    return out
  } as typeof pg.Pool.prototype.query
  const clientQuery = pg.Client.prototype.query as (...a: unknown[]) => unknown
  pg.Client.prototype.query = function (this: pg.Client, ...a: unknown[]) {
    const stats = dbStats
    if (!stats || (this as unknown as { bench?: boolean }).bench) return clientQuery.apply(this, a)
    const key = keyOf(sqlOf(a[0]))
    const t0 = performance.now()
    const done = () => {
      const ms = performance.now() - t0
      stats.clientMs += ms
      const e = stats.bySql.get(key) ?? { n: 0, ms: 0 }
      e.n++
      e.ms += ms
      stats.bySql.set(key, e)
    }
    const cb = a[a.length - 1]
    if (typeof cb === 'function') {
      a[a.length - 1] = (...r: unknown[]) => { done(); return (cb as (...x: unknown[]) => unknown)(...r) }
      return clientQuery.apply(this, a)
    }
    const out = clientQuery.apply(this, a) as Promise<unknown> | undefined
    out?.then?.(done, done)
    return out
  } as typeof pg.Client.prototype.query
}
function dbLines (d: DbStats, requests: number): string[] {
  const per = (x: number) => (x / Math.max(1, requests)).toFixed(2)
  const top = [...d.bySql].sort((a, b) => b[1].ms - a[1].ms).slice(0, Number(args.statements))
    .map(([sql, e]) => `    ${per(e.n)}/req  ${(e.ms / e.n).toFixed(2).padStart(6)} ms each  ${sql}`)
  return [`database per request: ${per(d.poolQueries)} pool queries, ${per(d.clientMs)} ms in round trips, ${per(d.poolMs)} ms from pool.query to result (incl. waiting for one of the 10 connections)`, ...top]
}

// ------------------------------------------------------------------ CPU profile summary
interface ProfileNode { id: number, callFrame: { functionName: string, url: string, lineNumber: number }, hitCount?: number, children?: number[] }
function summarise (profile: { nodes: ProfileNode[], samples?: number[], timeDeltas?: number[], startTime: number, endTime: number }): string[] {
  // shares of busy time: idle samples (event loop waiting) are left out
  const total = profile.nodes.reduce((a, n) => a + (n.callFrame.functionName === '(idle)' ? 0 : n.hitCount ?? 0), 0) || 1
  const byFn = new Map<string, number>()
  const byPkg = new Map<string, number>()
  const root = process.cwd()
  for (const n of profile.nodes) {
    const hits = n.hitCount ?? 0
    if (hits === 0 || n.callFrame.functionName === '(idle)') continue
    const url = n.callFrame.url.replace('file://', '').replace(root + '/', '')
    const fnKey = `${n.callFrame.functionName || '(anonymous)'} ${url ? `${url}:${n.callFrame.lineNumber + 1}` : ''}`.trim()
    byFn.set(fnKey, (byFn.get(fnKey) ?? 0) + hits)
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
    const pkg = m ? m[1] : url.startsWith('src/') ? url.split('/').slice(0, 2).join('/') : url ? (url.startsWith('node:') ? 'node core' : url.split('/')[0]) : n.callFrame.functionName
    byPkg.set(pkg, (byPkg.get(pkg) ?? 0) + hits)
  }
  const fmt = (m: Map<string, number>, k: number) => [...m].sort((a, b) => b[1] - a[1]).slice(0, k).map(([name, hits]) => `  ${(hits / total * 100).toFixed(1).padStart(5)}%  ${name}`)
  return ['share of busy (non-idle) samples by package/folder, self time:', ...fmt(byPkg, 14), 'top self-time functions:', ...fmt(byFn, 20)]
}

// ------------------------------------------------------------------ PostgreSQL CPU
// The CPU time of the service's backends (every connection to the bench database but the bare
// route's and this probe's), read from /proc: the database's share of a request's cost.
const TICK_US = 1e6 / 100 // USER_HZ
async function pgTicks (probe: pg.Client, of: 'service' | 'bare' = 'service'): Promise<Map<number, number>> {
  const { rows } = await probe.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND ${of === 'bare' ? "application_name = 'bench-bare'" : "application_name NOT LIKE 'bench-%'"}`)
  const out = new Map<number, number>()
  for (const { pid } of rows) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      out.set(pid, Number(f[11]) + Number(f[12])) // utime, stime
    } catch {}
  }
  return out
}
const ticksSince = (before: Map<number, number>, after: Map<number, number>) =>
  [...after].reduce((a, [pid, t]) => a + t - (before.get(pid) ?? 0), 0)

// ------------------------------------------------------------------ main
instrumentPg()
registerRun(process.pid)
const teardowns: Array<() => Promise<void> | void> = []
const t = { teardown: (fn: () => Promise<void> | void) => { teardowns.push(fn) } }
// --load: CPU burners for the whole run (bare route and service alike)
teardowns.push(startBurners(burners))
try {
  console.log(`api bench: ${connections} connections x ${duration} s per scenario (after ${warmup} s of the same load, not counted), ${driveCount} drives, ${serverCount} servers, service log level ${args['log-level']} (to /dev/null); ${os.cpus().length} cores`)
  console.log(describeLoad(burners))
  console.log(`load average at start: ${load()}`)

  const databaseUrl = await createTestDatabase(t)
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'clonejobs-bench-api-'))
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }))
  // maxRequestsPerSocket 0: autocannon keeps sending on a connection the server asked to close
  // (Node answers 503 past the limit, 1,000 by default): unlimited here, as for the bare route
  const config = loadConfig({}, { databaseUrl, dataDir, drivesDir: path.join(dataDir, 'drives'), logLevel: args['log-level'], bootstrapAccount: false, maxRequestsPerSocket: 0 })
  // as buildApp does, with the phase hooks registered first
  const app = Fastify(serverOptions(config, { level: args['log-level'], file: '/dev/null' }))
  instrument(app)
  await app.register(service, { config, databaseUrl })
  await app.ready()
  t.teardown(() => app.close())
  const svcUrl = await app.listen({ host: '127.0.0.1', port: 0 })
  const user = await createUser(app)
  const auth = { authorization: user.authorization }
  const json = { ...auth, 'content-type': 'application/json' }

  // seed: drives (bulk create, then wait for their create jobs), servers each mounting one
  const post = async (url: string, body: unknown) => {
    const res = await fetch(svcUrl + url, { method: 'POST', headers: json, body: JSON.stringify(body) })
    if (!res.ok) throw new Error(`POST ${url}: ${res.status} ${await res.text()}`)
    return await res.json() as { objects: Array<{ uuid: string }> }
  }
  const drives = (await post('/api/2.0/drives/', { objects: Array.from({ length: driveCount }, (_, i) => ({ name: `bench-${String(i).padStart(4, '0')}`, size: 1024 ** 3, media: 'disk' })) })).objects.map(d => d.uuid)
  while (await app.prisma.drive.count({ where: { ownerId: user.id, status: { not: 'unmounted' } } }) > 0) await sleep(100)
  const servers: string[] = []
  for (let i = 0; i < serverCount; i++) {
    servers.push((await post('/api/2.0/servers/', { name: `bench-srv-${i}`, cpu: 1000, mem: 1024 ** 3, vnc_password: 'bench', drives: [{ dev_channel: '0:0', device: 'virtio', drive: drives[i] }] })).objects[0].uuid)
  }
  while (await app.prisma.job.count({ where: { state: { notIn: ['success', 'error', 'cancelled'] } } }) > 0) await sleep(100)
  if (historyCount > 0) {
    // the account's jobs, then 100 for each other account (owner i % others)
    await app.prisma.$executeRawUnsafe(`INSERT INTO jobs (id, owner_id, operation, state, root_id, progress, created, last_modified, started_at, finished_at)
      SELECT u, o, 'drive_clone', 'success', u, 100, t, t, t, t FROM (
        SELECT gen_random_uuid() AS u, $1::uuid AS o, now() - (i * interval '20 seconds') AS t FROM generate_series(1, $2::int) i
        UNION ALL
        SELECT gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad((i % $3::int)::text, 12, '0'))::uuid, now() - (i * interval '20 seconds')
        FROM generate_series(1, $3::int * 100) i) g`, user.id, historyCount, otherAccounts)
  }
  const jobs = (await app.prisma.job.findMany({ where: { ownerId: user.id, parentId: null }, select: { id: true }, take: 20 })).map(j => j.id)
  console.log(`seeded: ${drives.length} drives, ${servers.length} servers, ${await app.prisma.job.count()} jobs`)

  // the anchor: a bare Fastify route, 20 rows of the same drives table through pg
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 10, application_name: 'bench-bare' })
  barePool = pool
  pool.on('connect', c => { (c as unknown as { bench: boolean }).bench = true })
  t.teardown(() => pool.end())
  const bare = Fastify({ logger: false })
  t.teardown(() => bare.close())
  bare.get('/drives/', async () => {
    const { rows } = await pool.query(`SELECT id, owner_id, name, size::text, media, status, storage_type, allow_multimount, affinities, meta, tags, iops, count(*) OVER () AS total
      FROM drives WHERE owner_id = $1 AND NOT deleted ORDER BY name LIMIT 20`, [user.id])
    return { meta: { limit: 20, offset: 0, total_count: Number(rows[0]?.total ?? 0) }, objects: rows.map(({ total: _total, ...r }) => r) }
  })
  const bareUrl = await bare.listen({ host: '127.0.0.1', port: 0 })
  const probe = new pg.Client({ connectionString: databaseUrl, application_name: 'bench-probe' });
  (probe as unknown as { bench: boolean }).bench = true
  await probe.connect()
  t.teardown(() => probe.end())
  // the seed's rows were each written several times (a drive's create job updates it): vacuumed
  // now, as autovacuum would soon, so the first bare run and the scenarios read the table the last
  // bare run reads after the mixed load's drives are deleted and vacuumed
  await probe.query('VACUUM ANALYZE')

  const get = (p: string): LoadRequest => ({ method: 'GET', path: p, headers: auth })
  const pick = <X>(xs: X[], i: number) => xs[i % xs.length]
  const scenarios: Array<{ name: string, requests: LoadRequest[] }> = [
    { name: 'drives-list', requests: [get('/api/2.0/drives/?limit=20')] },
    { name: 'drive-get', requests: drives.slice(0, 20).map(id => get(`/api/2.0/drives/${id}/`)) },
    { name: 'servers-list', requests: [get('/api/2.0/servers/?limit=20')] },
    { name: 'jobs-list', requests: [get('/api/2.0/jobs/?limit=20')] },
    { name: 'job-get', requests: jobs.map(id => get(`/api/2.0/jobs/${id}/`)) },
    {
      name: 'mixed',
      // 20 requests: 35% list drives, 20% list jobs, 15% create, 15% get drive, 10% get job, 5% detail
      requests: [
        ...Array.from({ length: 7 }, () => get('/api/2.0/drives/?limit=20')),
        ...Array.from({ length: 4 }, () => get('/api/2.0/jobs/?limit=20')),
        ...Array.from({ length: 3 }, () => ({ method: 'POST', path: '/api/2.0/drives/', headers: json, body: JSON.stringify({ name: 'bench-mixed', size: 1024 ** 3, media: 'disk' }) })),
        ...Array.from({ length: 3 }, (_, i) => get(`/api/2.0/drives/${pick(drives, i * 7)}/`)),
        ...Array.from({ length: 2 }, (_, i) => get(`/api/2.0/jobs/${pick(jobs, i * 3)}/`)),
        get('/api/2.0/drives/detail/?limit=20')
      ].map((r, i, all) => all[(i * 7) % all.length]) // interleaved (7 is coprime with 20)
    }
  ]
  const only = args.only?.split(',')
  const chosen = scenarios.filter(s => !only || only.includes(s.name))

  const fmt = (r: LoadResult) => `${r.rps.toFixed(0).padStart(6)} req/s  p50 ${String(r.p50).padStart(4)} ms  p99 ${String(r.p99).padStart(5)} ms  (${r.total} requests${r.non2xx + r.errors > 0 ? `, ${r.non2xx} non-2xx, ${r.errors} errors` : ''})`
  const bareRuns: LoadResult[] = []
  const warm = async (url: string, requests: LoadRequest[]) => {
    if (warmup === 0) return
    await runLoad({ url, connections, duration: warmup, requests })
    for (let i = 0; i < 3000 && busy(); i++) await sleep(10)
  }
  const runBare = async () => {
    await warm(bareUrl, [{ method: 'GET', path: '/drives/' }])
    const ticks = await pgTicks(probe, 'bare')
    const cpu = process.cpuUsage()
    const r = await runLoad({ url: bareUrl, connections, duration, amount, requests: [{ method: 'GET', path: '/drives/' }] })
    const used = process.cpuUsage(cpu)
    const pgUs = ticksSince(ticks, await pgTicks(probe, 'bare')) * TICK_US
    bareRuns.push(r)
    console.log(`  ${'bare fastify+pg'.padEnd(16)} ${fmt(r)}   load ${load()}`)
    console.log(`  ${''.padEnd(16)} CPU per request: server process ${((used.user + used.system) / Math.max(1, r.total)).toFixed(0)} µs, its PostgreSQL backends ${(pgUs / Math.max(1, r.total)).toFixed(0)} µs`)
    return r
  }
  const runScenario = async (s: typeof chosen[number]): Promise<LoadResult> => {
    await warm(svcUrl, s.requests)
    phases = { auth: [], handler: [], serialise: [], total: [] }
    dbStats = { poolQueries: 0, poolMs: 0, clientMs: 0, bySql: new Map() }
    let session: Session | undefined
    if (args.profile) {
      session = new Session()
      session.connect()
      await session.post('Profiler.enable')
      await session.post('Profiler.setSamplingInterval', { interval: 200 })
      await session.post('Profiler.start')
    }
    const ticks = await pgTicks(probe)
    const cpu = process.cpuUsage()
    watchStalls()
    const r = await runLoad({ url: svcUrl, connections, duration, amount, requests: s.requests })
    // requests still queued in the service when the load stopped belong to this scenario
    for (let i = 0; i < 3000 && busy(); i++) await sleep(10)
    const used = process.cpuUsage(cpu)
    const pgUs = ticksSince(ticks, await pgTicks(probe)) * TICK_US
    const p = phases
    const d = dbStats
    phases = undefined
    dbStats = undefined
    console.log(`  ${s.name.padEnd(16)} ${fmt(r)}   load ${load()}`)
    console.log(`  ${''.padEnd(16)} ${phaseLine(p)}`)
    console.log(`  ${''.padEnd(16)} ${stallLine()}`)
    const n = Math.max(1, p.total.length)
    console.log(`  ${''.padEnd(16)} CPU per request: service process ${((used.user + used.system) / n).toFixed(0)} µs, its PostgreSQL backends ${(pgUs / n).toFixed(0)} µs${args.profile ? ' (profiler on)' : ''}`)
    for (const line of dbLines(d, p.total.length)) console.log(`  ${''.padEnd(16)} ${line}`)
    if (session) {
      const { profile } = await session.post('Profiler.stop')
      session.disconnect()
      const file = path.resolve('data', `bench-api-${s.name}.cpuprofile`)
      fs.mkdirSync(path.dirname(file), { recursive: true })
      fs.writeFileSync(file, JSON.stringify(profile))
      console.log(`  ${''.padEnd(16)} CPU profile written to ${path.relative(process.cwd(), file)}:`)
      for (const line of summarise(profile as never)) console.log(`  ${''.padEnd(16)} ${line}`)
    }
    return r
  }
  // after the mixed load, the jobs its creates started run out first (at most a minute): the next
  // bare run measures the route, not the route beside the service's workers
  const settle = async () => {
    for (const until = Date.now() + 60_000; Date.now() < until && await app.prisma.job.count({ where: { state: { notIn: ['success', 'error', 'cancelled'] } } }) > 0;) await sleep(100)
  }
  // and the drives it made are deleted (through the API, then vacuumed): every bare run reads the
  // table of 200 drives the first one read, not the thousands a 10 s mixed load adds (a bare run
  // after them spent 3.6x the PostgreSQL CPU per request on its count and sort, measured). Their
  // jobs are deleted too (SQL; the API never deletes a job before the purge's three days), so each
  // round's scenarios read the account the first round read. (Before the per-account job
  // counters, the jobs list counted the account's top-level jobs on every page, and with the
  // ~3,800 jobs each mixed load leaves, a create and a delete per drive, its PostgreSQL CPU per
  // request grew from 0.3-0.4 to 1.0-1.8 ms, measured 2026-12-04; a filtered list still counts.)
  const clearMixed = async (since: Date) => {
    await settle()
    const made = (await app.prisma.drive.findMany({ where: { ownerId: user.id, name: 'bench-mixed' }, select: { id: true } })).map(d => d.id)
    for (let i = 0; i < made.length; i += 500) {
      const res = await fetch(svcUrl + '/api/2.0/drives/', { method: 'DELETE', headers: json, body: JSON.stringify({ objects: made.slice(i, i + 500).map(uuid => ({ uuid })) }) })
      if (!res.ok) throw new Error(`DELETE /drives/: ${res.status} ${await res.text()}`)
    }
    await settle()
    if (made.length > 0) {
      const jobsMade = (await probe.query('DELETE FROM jobs WHERE owner_id = $1::uuid AND created >= $2', [user.id, since])).rowCount ?? 0
      await probe.query('VACUUM ANALYZE drives, jobs')
      console.log(`  (the mixed load's ${made.length} drives and ${jobsMade} jobs deleted; ${await app.prisma.drive.count({ where: { ownerId: user.id } })} drives and ${await app.prisma.job.count({ where: { ownerId: user.id } })} jobs left)`)
    }
  }

  // every scenario runs between two bare runs and is compared with their mean, made seconds
  // apart: on these shared machines the bare route's own rate moved 1.5x within one run, so an
  // anchor taken only at the start and the end compared a scenario with another machine
  console.log('')
  const perRound: Array<Map<string, { r: LoadResult, ratio: number }>> = []
  let before = await runBare()
  for (let round = 1; round <= rounds; round++) {
    if (rounds > 1) console.log(`  round ${round} of ${rounds}`)
    const results = new Map<string, { r: LoadResult, ratio: number }>()
    for (const s of chosen) {
      const since = s.name === 'mixed' ? (await probe.query<{ t: Date }>('SELECT clock_timestamp() AS t')).rows[0].t : undefined
      const r = await runScenario(s)
      if (since) await clearMixed(since)
      const after = await runBare()
      results.set(s.name, { r, ratio: r.rps / ((before.rps + after.rps) / 2) })
      before = after
    }
    perRound.push(results)
  }

  const of = (name: string) => perRound.map(m => m.get(name)).filter(x => x !== undefined)
  console.log(`\nload average at end: ${load()}`)
  if (rounds > 1) {
    for (const s of chosen) console.log(`  ${s.name.padEnd(16)} rounds: ${of(s.name).map(x => s.name === 'mixed' ? `${x.r.rps.toFixed(0)} req/s p99 ${x.r.p99} ms` : `${x.ratio.toFixed(2)}x p99 ${x.r.p99} ms`).join(' | ')}`)
  }
  const ratio = (name: string) => of(name).length > 0 ? `${name} ${median(of(name).map(x => x.ratio)).toFixed(2)}x p99 ${median(of(name).map(x => x.r.p99)).toFixed(0)} ms` : undefined
  const mixed = of('mixed')
  const bareMean = bareRuns.reduce((a, r) => a + r.rps, 0) / bareRuns.length
  console.log(`clonejobs/bare${rounds > 1 ? ` (medians of ${rounds} rounds)` : ''}: ${['drives-list', 'drive-get', 'servers-list', 'jobs-list', 'job-get'].map(ratio).filter(Boolean).join(', ')}` +
    `${mixed.length > 0 ? `; mixed ${median(mixed.map(x => x.r.rps)).toFixed(0)} req/s p99 ${median(mixed.map(x => x.r.p99)).toFixed(0)} ms` : ''} (bare ${bareMean.toFixed(0)} req/s p99 ${median(bareRuns.map(r => r.p99)).toFixed(0)} ms, ${bareRuns.length} runs)`)
} finally {
  for (const fn of teardowns.reverse()) await fn()
  if (unregisterRun(process.pid)) stopDaemon()
}
