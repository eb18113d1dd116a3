/**
 * Clone benchmark: `npx tsx bench/clone.ts [rounds] [--dense-mib 2048] [--load 0]`, through the real app
 * (HTTP API, job engine, LocalDriveStorage) on real files, beside the system tools on the same
 * disk, in one run.
 *
 *   sparse: a 10 GiB drive holding 64 MiB of random data in 8 regions. Timed: the clone API call
 *           to job success (POST ?do=clone, then GET /jobs/{uuid}/?wait=30), the storage copy
 *           alone (app.storage.copy, the same call the job makes), and `cp --sparse=always`
 *           with and without an fsync of the copy (the anchor: cp + fsync).
 *           Job overhead = API-to-success minus the storage copy alone.
 *   dense:  a 2 GiB drive of random data (page cache warmed first). Throughput of the clone
 *           (API to success) beside `cp`, and `cp` + fsync of the copy (the anchor: the service
 *           fsyncs a finished copy before it is renamed into place, so a clone that succeeded
 *           survives a power cut).
 *
 * Each clone's time is split from its job row: API (POST → job created, and job finished → seen by
 * the client), queue wait (created → started), copy including fsync (started → result.copied_at)
 * and settle (copied_at → finished: status, locks, events). No hash is computed for clones.
 * queue wait: `--wait-clones` (default 15) clones of a small drive one after another, the worker
 *         idle in between: created (the job row written) → started (claimed), p50 and p95
 *         (issue 18: < 20 ms p50, the NOTIFY wake-up, not a poll).
 * Each method runs `rounds` times (default 1) after one untimed warm-up; `sync` runs between
 * runs so writeback of one run does not slow the next. Prints medians, the targets
 * (sparse ≤ 2× (cp + fsync) + 100 ms; dense ≥ 0.9× cp + fsync) and the load average at start
 * and end. Figures only, no asserts; the last line is the ratios.
 * `--load N` runs N CPU-burning processes for the whole run (bench/load.ts), the system tools and
 * the service alike, so a loaded figure can be made again; the header says so.
 * Uses DATABASE_URL (default: the local PostgreSQL at 127.0.0.1:5432).
 */
import { execFileSync, spawn } from 'node:child_process'
import { parseArgs } from 'node:util'
import { randomBytes, randomUUID } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { buildTestApp, createUser } from '../test/helpers/app.ts'
import { registerRun, stopDaemon, unregisterRun } from '../test/setup/test-db.ts'
import { describeLoad, startBurners } from './load.ts'

const MiB = 1024 ** 2
const GiB = 1024 ** 3
const { values: opts, positionals } = parseArgs({ allowPositionals: true, options: { 'dense-mib': { type: 'string', default: '2048' }, 'wait-clones': { type: 'string', default: '15' }, load: { type: 'string', default: '0' } } })
const rounds = Math.max(1, Number(positionals[0] ?? 1))
const denseBytes = Math.max(1, Number(opts['dense-mib'])) * MiB
const waitClones = Math.max(1, Number(opts['wait-clones']))
const burners = Math.max(0, Math.floor(Number(opts.load)) || 0)
const load = () => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')
const loadAtStart = load()
const dataDir = path.resolve('data', 'bench-clone')
const scratch = path.join(dataDir, 'scratch')

const teardowns: Array<() => Promise<void> | void> = []
const t = { teardown: (fn: () => Promise<void> | void) => { teardowns.push(fn) } }

function run (cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] })
    child.on('error', reject)
    child.on('close', code => { code === 0 ? resolve() : reject(new Error(`${cmd} exited with ${String(code)}`)) })
  })
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const ms = (x: number) => `${x.toFixed(0)} ms`
const mbps = (bytes: number, msec: number) => `${(bytes / MiB / (msec / 1000)).toFixed(0)} MiB/s`

/** Runs `fn` once untimed, then `rounds` timed times with `after` and a sync between; returns the times. */
async function timed (fn: () => Promise<unknown>, after: () => Promise<void> | void): Promise<number[]> {
  await fn()
  await after()
  await run('sync', [])
  const out: number[] = []
  for (let i = 0; i < rounds; i++) {
    const start = performance.now()
    await fn()
    out.push(performance.now() - start)
    await after()
    await run('sync', [])
  }
  return out
}

process.env.DATABASE_URL ??= 'postgresql://postgres@127.0.0.1:5432/postgres'
registerRun(process.pid)
fs.rmSync(dataDir, { recursive: true, force: true })
fs.mkdirSync(scratch, { recursive: true })
teardowns.push(startBurners(burners))
try {
  // STORAGE_FSYNC=false measures clones without the final fsync (the service's setting of that name)
  const { app } = await buildTestApp(t, { config: { drivesDir: path.join(dataDir, 'drives'), storageFsync: process.env.STORAGE_FSYNC !== 'false' } })
  const user = await createUser(app)
  const address = await app.listen({ host: '127.0.0.1', port: 0 })
  const headers = { authorization: user.authorization, 'content-type': 'application/json' }
  const call = async (method: string, url: string, body?: unknown) => {
    const res = await fetch(address + url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
    if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${await res.text()}`)
    return res.status === 204 ? undefined : res.json() as Promise<any>
  }

  async function readyDrive (name: string, size: number): Promise<string> {
    const d = (await call('POST', '/api/2.0/drives/', { name, size, media: 'disk' })).objects[0]
    for (;;) {
      const now = await call('GET', `/api/2.0/drives/${d.uuid}/`)
      if (now.status === 'unmounted') return d.uuid
      await new Promise(resolve => setTimeout(resolve, 20))
    }
  }

  async function writeRandom (id: string, offset: number, length: number): Promise<void> {
    async function * chunks (): AsyncGenerator<Buffer> {
      for (let left = length; left > 0; left -= 4 * MiB) yield randomBytes(Math.min(left, 4 * MiB))
    }
    await pipeline(Readable.from(chunks()), await app.storage.createWriteStream(id, { start: offset }))
  }

  const jobTimes: Array<{ api: number, queue: number, copy: number, settle: number }> = []
  const clones: string[] = []
  /** POST ?do=clone, then GET the job with ?wait= until it is finished. */
  async function cloneViaApi (id: string): Promise<void> {
    const posted = performance.now()
    const dst = (await call('POST', `/api/2.0/drives/${id}/action/?do=clone`, {})).objects[0]
    clones.push(dst.uuid)
    let job = await call('GET', `/api/2.0/jobs/${dst.jobs[0].uuid}/?wait=30`)
    while (!['success', 'error', 'cancelled'].includes(job.state)) job = await call('GET', `/api/2.0/jobs/${dst.jobs[0].uuid}/?wait=30`)
    if (job.state !== 'success') throw new Error(`clone ${job.state}: ${JSON.stringify(job.error)}`)
    const seen = performance.now()
    const [created, started, finished] = [job.created, job.started_at, job.finished_at].map(Date.parse)
    const copied = Date.parse(job.data?.copied_at ?? job.result?.copied_at ?? job.finished_at)
    jobTimes.push({ api: (seen - posted) - (finished - created), queue: started - created, copy: copied - started, settle: finished - copied })
  }
  async function dropClones (): Promise<void> {
    for (const id of clones.splice(0)) await app.storage.delete(id)
  }
  const out = path.join(scratch, 'copy.img')
  const rmOut = () => fs.rmSync(out, { force: true })
  const storageCopyId = randomUUID()

  // ---------------------------------------------------------------- queue wait
  const small = await readyDrive('small', 16 * MiB)
  await writeRandom(small, 0, 4 * MiB)
  jobTimes.length = 0
  await cloneViaApi(small) // warm-up
  await dropClones()
  jobTimes.length = 0
  for (let i = 0; i < waitClones; i++) {
    await new Promise(resolve => setTimeout(resolve, 30 + Math.random() * 40))
    await cloneViaApi(small)
  }
  await dropClones()
  const waits = jobTimes.map(j => j.queue)
  const pctl = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]

  // ---------------------------------------------------------------- sparse
  const sparse = await readyDrive('sparse-10g', 10 * GiB)
  for (let i = 0; i < 8; i++) await writeRandom(sparse, i * 1280 * MiB + 12345 * 4096, 8 * MiB)
  const sparseFile = app.storage.path(sparse)
  execFileSync('cat', [sparseFile], { stdio: ['ignore', 'ignore', 'inherit'] })
  const st = fs.statSync(sparseFile)

  const sCp = await timed(() => run('cp', ['--sparse=always', sparseFile, out]), rmOut)
  const sCpSync = await timed(async () => { await run('cp', ['--sparse=always', sparseFile, out]); await run('sync', [out]) }, rmOut)
  const sCopy = await timed(() => app.storage.copy(sparse, storageCopyId), () => app.storage.delete(storageCopyId))
  jobTimes.length = 0
  const sApi = await timed(() => cloneViaApi(sparse), dropClones)
  const sJobs = jobTimes.slice(1)
  const overhead = median(sApi) - median(sCopy)

  // ---------------------------------------------------------------- dense
  const dense = await readyDrive('dense', denseBytes)
  await writeRandom(dense, 0, denseBytes)
  const denseFile = app.storage.path(dense)
  execFileSync('cat', [denseFile], { stdio: ['ignore', 'ignore', 'inherit'] })

  const dCp = await timed(() => run('cp', [denseFile, out]), rmOut)
  const dCpSync = await timed(async () => { await run('cp', [denseFile, out]); await run('sync', [out]) }, rmOut)
  const dCopy = await timed(() => app.storage.copy(dense, storageCopyId), () => app.storage.delete(storageCopyId))
  jobTimes.length = 0
  const dApi = await timed(() => cloneViaApi(dense), dropClones)
  const dJobs = jobTimes.slice(1)

  // ---------------------------------------------------------------- report
  const nproc = execFileSync('nproc', { encoding: 'utf8' }).trim()
  const split = (js: typeof jobTimes) => `API ${ms(median(js.map(j => j.api)))}, queue ${ms(median(js.map(j => j.queue)))}, copy+fsync ${ms(median(js.map(j => j.copy)))}, settle ${ms(median(js.map(j => j.settle)))}`
  console.log(`clone benchmark: ${rounds} timed round(s) per method (medians), ${nproc} cores, ext4 on the same disk, fsync ${process.env.STORAGE_FSYNC === 'false' ? 'off' : 'on'} (STORAGE_FSYNC)`)
  console.log(describeLoad(burners))
  console.log(`load average at start: ${loadAtStart}`)
  console.log('')
  console.log(`queue wait: ${waits.length} clones of a 16 MiB drive, worker idle: created → started p50 ${ms(pctl(waits, 0.5))}, p95 ${ms(pctl(waits, 0.95))} (target < 20 ms p50: ${pctl(waits, 0.5) < 20 ? 'met' : 'NOT met'})`)
  console.log('')
  console.log(`sparse: 10 GiB drive holding 64 MiB of random data (allocated ${(st.blocks * 512 / MiB).toFixed(1)} MiB)`)
  console.log(`  cp --sparse=always                 ${ms(median(sCp)).padStart(9)}`)
  console.log(`  cp --sparse=always + fsync         ${ms(median(sCpSync)).padStart(9)}   (anchor)`)
  console.log(`  storage.copy alone (cp + fsync)    ${ms(median(sCopy)).padStart(9)}`)
  console.log(`  clone via API, POST to success     ${ms(median(sApi)).padStart(9)}   (${split(sJobs)})`)
  console.log(`  job overhead (API − storage copy)  ${ms(overhead).padStart(9)}`)
  const sTarget = 2 * median(sCpSync) + 100
  console.log(`  target: clone ≤ 2 × (cp + fsync) + 100 ms = ${ms(sTarget)} → ${median(sApi) <= sTarget ? 'met' : 'NOT met'}`)
  console.log('')
  console.log(`dense: ${denseBytes / MiB} MiB drive of random data (page cache warm)`)
  console.log(`  cp                                 ${ms(median(dCp)).padStart(9)}  ${mbps(denseBytes, median(dCp)).padStart(10)}`)
  console.log(`  cp + fsync of the copy             ${ms(median(dCpSync)).padStart(9)}  ${mbps(denseBytes, median(dCpSync)).padStart(10)}   (anchor)`)
  console.log(`  storage.copy alone (cp + fsync)    ${ms(median(dCopy)).padStart(9)}  ${mbps(denseBytes, median(dCopy)).padStart(10)}`)
  console.log(`  clone via API, POST to success     ${ms(median(dApi)).padStart(9)}  ${mbps(denseBytes, median(dApi)).padStart(10)}   (${split(dJobs)})`)
  const ratioSync = median(dCpSync) / median(dApi)
  console.log(`  target: clone ≥ 0.9 × (cp + fsync) → ${ratioSync.toFixed(2)}x (${ratioSync >= 0.9 ? 'met' : 'NOT met'}); ${(median(dCp) / median(dApi)).toFixed(2)}x plain cp`)
  console.log('')
  console.log(`load average at end: ${load()}`)
  console.log(`clonejobs/cp+fsync: sparse clone ${median(sApi).toFixed(0)} ms vs ${median(sCpSync).toFixed(0)} ms = ${(median(sApi) / median(sCpSync)).toFixed(2)}x the time (target ≤ 2x + 100 ms: ${median(sApi) <= sTarget ? 'met' : 'not met'}), dense clone ${ratioSync.toFixed(2)}x the throughput, queue wait p50 ${pctl(waits, 0.5).toFixed(0)} ms`)
} finally {
  for (const fn of teardowns.reverse()) await fn()
  fs.rmSync(dataDir, { recursive: true, force: true })
  unregisterRun(process.pid)
  await stopDaemon()
}
