/**
 * Clone benchmark: `npx tsx bench/clone.ts [rounds]`, through the real app (HTTP API, job engine,
 * LocalDriveStorage) on real files, beside the system tools on the same disk, in one run.
 *
 *   sparse: a 10 GiB drive holding 64 MiB of random data in 8 regions. Timed: the clone API call
 *           to job success (POST ?do=clone, then GET /jobs/{uuid}/?wait=30), the storage copy
 *           alone (app.storage.copy, the same call the job makes), and `cp --sparse=always`.
 *           Job overhead = API-to-success minus the storage copy alone.
 *   dense:  a 2 GiB drive of random data (page cache warmed first). Throughput of the clone
 *           (API to success) beside `cp` and `dd bs=4M`, and `cp` + fsync of the copy (the
 *           service fsyncs a finished copy before it is renamed into place, so a clone that
 *           succeeded survives a power cut).
 *
 * Each method runs `rounds` times (default 3) after one untimed warm-up; `sync` runs between
 * runs so writeback of one run does not slow the next. Prints medians and the targets
 * (sparse ≤ 2× cp plus < 100 ms job overhead; dense ≥ 0.9× cp). Figures only, no asserts.
 * Uses DATABASE_URL when set, otherwise the embedded test PostgreSQL.
 */
import { execFileSync, spawn } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { buildTestApp, createUser } from '../test/helpers/app.ts'
import { registerRun, stopDaemon, unregisterRun } from '../test/setup/test-db.ts'

const MiB = 1024 ** 2
const GiB = 1024 ** 3
const rounds = Math.max(1, Number(process.argv[2] ?? 3))
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

registerRun(process.pid)
fs.rmSync(dataDir, { recursive: true, force: true })
fs.mkdirSync(scratch, { recursive: true })
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

  const jobTimes: Array<{ queue: number, run: number }> = []
  const clones: string[] = []
  /** POST ?do=clone, then GET the job with ?wait= until it is finished. */
  async function cloneViaApi (id: string): Promise<void> {
    const dst = (await call('POST', `/api/2.0/drives/${id}/action/?do=clone`, {})).objects[0]
    clones.push(dst.uuid)
    let job = await call('GET', `/api/2.0/jobs/${dst.jobs[0].uuid}/?wait=30`)
    while (!['success', 'error', 'cancelled'].includes(job.state)) job = await call('GET', `/api/2.0/jobs/${dst.jobs[0].uuid}/?wait=30`)
    if (job.state !== 'success') throw new Error(`clone ${job.state}: ${JSON.stringify(job.error)}`)
    jobTimes.push({ queue: Date.parse(job.started_at) - Date.parse(job.created), run: Date.parse(job.finished_at) - Date.parse(job.started_at) })
  }
  async function dropClones (): Promise<void> {
    for (const id of clones.splice(0)) await app.storage.delete(id)
  }
  const out = path.join(scratch, 'copy.img')
  const rmOut = () => fs.rmSync(out, { force: true })
  const storageCopyId = randomUUID()

  // ---------------------------------------------------------------- sparse
  const sparse = await readyDrive('sparse-10g', 10 * GiB)
  for (let i = 0; i < 8; i++) await writeRandom(sparse, i * 1280 * MiB + 12345 * 4096, 8 * MiB)
  const sparseFile = app.storage.path(sparse)
  execFileSync('cat', [sparseFile], { stdio: ['ignore', 'ignore', 'inherit'] })
  const st = fs.statSync(sparseFile)

  const sCp = await timed(() => run('cp', ['--sparse=always', sparseFile, out]), rmOut)
  const sCopy = await timed(() => app.storage.copy(sparse, storageCopyId), () => app.storage.delete(storageCopyId))
  jobTimes.length = 0
  const sApi = await timed(() => cloneViaApi(sparse), dropClones)
  const sJobs = jobTimes.slice(1)
  const overhead = median(sApi) - median(sCopy)

  // ---------------------------------------------------------------- dense
  const dense = await readyDrive('dense-2g', 2 * GiB)
  await writeRandom(dense, 0, 2 * GiB)
  const denseFile = app.storage.path(dense)
  execFileSync('cat', [denseFile], { stdio: ['ignore', 'ignore', 'inherit'] })

  const dCp = await timed(() => run('cp', [denseFile, out]), rmOut)
  const dDd = await timed(() => run('dd', [`if=${denseFile}`, `of=${out}`, 'bs=4M', 'status=none']), rmOut)
  const dCpSync = await timed(async () => { await run('cp', [denseFile, out]); await run('sync', [out]) }, rmOut)
  const dCopy = await timed(() => app.storage.copy(dense, storageCopyId), () => app.storage.delete(storageCopyId))
  jobTimes.length = 0
  const dApi = await timed(() => cloneViaApi(dense), dropClones)
  const dJobs = jobTimes.slice(1)

  // ---------------------------------------------------------------- report
  const nproc = execFileSync('nproc', { encoding: 'utf8' }).trim()
  const load = fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')
  console.log(`clone benchmark: ${rounds} timed rounds per method (medians), ${nproc} cores, load average ${load}, ext4 on the same disk, fsync ${process.env.STORAGE_FSYNC === 'false' ? 'off' : 'on'} (STORAGE_FSYNC)`)
  console.log('')
  console.log(`sparse: 10 GiB drive holding 64 MiB of random data (allocated ${(st.blocks * 512 / MiB).toFixed(1)} MiB)`)
  console.log(`  cp --sparse=always                 ${ms(median(sCp)).padStart(9)}`)
  console.log(`  storage.copy alone (cp + fsync)    ${ms(median(sCopy)).padStart(9)}`)
  console.log(`  clone via API, POST to success     ${ms(median(sApi)).padStart(9)}   (job queued ${ms(median(sJobs.map(j => j.queue)))}, ran ${ms(median(sJobs.map(j => j.run)))})`)
  console.log(`  job overhead (API − storage copy)  ${ms(overhead).padStart(9)}`)
  console.log(`  target: clone ≤ 2 × cp + 100 ms = ${ms(2 * median(sCp) + 100)}, overhead < 100 ms → ${median(sApi) <= 2 * median(sCp) + 100 ? 'met' : 'NOT met'} / ${overhead < 100 ? 'met' : 'NOT met'}`)
  console.log('')
  console.log('dense: 2 GiB drive of random data (page cache warm)')
  console.log(`  cp                                 ${ms(median(dCp)).padStart(9)}  ${mbps(2 * GiB, median(dCp)).padStart(10)}`)
  console.log(`  dd bs=4M                           ${ms(median(dDd)).padStart(9)}  ${mbps(2 * GiB, median(dDd)).padStart(10)}`)
  console.log(`  cp + fsync of the copy             ${ms(median(dCpSync)).padStart(9)}  ${mbps(2 * GiB, median(dCpSync)).padStart(10)}`)
  console.log(`  storage.copy alone (cp + fsync)    ${ms(median(dCopy)).padStart(9)}  ${mbps(2 * GiB, median(dCopy)).padStart(10)}`)
  console.log(`  clone via API, POST to success     ${ms(median(dApi)).padStart(9)}  ${mbps(2 * GiB, median(dApi)).padStart(10)}   (job queued ${ms(median(dJobs.map(j => j.queue)))}, ran ${ms(median(dJobs.map(j => j.run)))})`)
  const ratio = median(dCp) / median(dApi)
  const ratioSync = median(dCpSync) / median(dApi)
  console.log(`  target: clone ≥ 0.9 × cp → ${ratio.toFixed(2)} × cp (${ratio >= 0.9 ? 'met' : 'NOT met'}); ${ratioSync.toFixed(2)} × cp + fsync (${ratioSync >= 0.9 ? 'met' : 'NOT met'})`)
} finally {
  for (const fn of teardowns.reverse()) await fn()
  fs.rmSync(dataDir, { recursive: true, force: true })
  unregisterRun(process.pid)
  await stopDaemon()
}
