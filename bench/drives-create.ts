/**
 * Drive creation benchmark: `npx tsx bench/drives-create.ts [drives] [batch]`.
 *
 * Starts the app on a fresh database (the machine's PostgreSQL when DATABASE_URL is set,
 * otherwise the embedded test server), listens on a local port, creates `drives` (default
 * 1000) drives of 100 GiB through the HTTP API with Basic auth, as bulk POSTs of `batch`
 * (default 100) objects, waits until every drive is `unmounted` (its drive_create job done),
 * and prints the elapsed time, drives per second, and the disk space the drive images use
 * (allocated blocks, from `du`) next to their nominal size. JOB_CONCURRENCY sets the workers
 * (default 4, as in the service). Figures only, no pass/fail.
 */
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { buildTestApp, createUser } from '../test/helpers/app.ts'
import { registerRun, stopDaemon, unregisterRun } from '../test/setup/test-db.ts'

const GiB = 1024 ** 3
const total = Math.max(1, Number(process.argv[2] ?? 1000))
const batch = Math.max(1, Number(process.argv[3] ?? 100))
const size = 100 * GiB
const dataDir = path.resolve('data', 'bench-drives')

const teardowns: Array<() => Promise<void> | void> = []
const t = { teardown: (fn: () => Promise<void> | void) => { teardowns.push(fn) } }

function du (dir: string, apparent: boolean): number {
  const args = apparent ? ['-s', '--apparent-size', '--block-size=1', dir] : ['-s', '--block-size=1', dir]
  return Number(execFileSync('du', args, { encoding: 'utf8' }).split('\t')[0])
}

const human = (bytes: number) => bytes >= 1024 ** 4 ? `${(bytes / 1024 ** 4).toFixed(1)} TiB` : bytes >= GiB ? `${(bytes / GiB).toFixed(1)} GiB` : `${(bytes / 1024 / 1024).toFixed(1)} MiB`

registerRun(process.pid)
fs.rmSync(dataDir, { recursive: true, force: true })
try {
  const jobConcurrency = Number(process.env.JOB_CONCURRENCY ?? 4)
  const { app } = await buildTestApp(t, { config: { drivesDir: path.join(dataDir, 'drives'), jobConcurrency } })
  const user = await createUser(app)
  const address = await app.listen({ host: '127.0.0.1', port: 0 })
  const headers = { authorization: user.authorization, 'content-type': 'application/json' }
  const call = async (method: string, url: string, body?: unknown) => {
    const res = await fetch(address + url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
    if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${await res.text()}`)
    return res.json() as Promise<any>
  }
  const emptyDu = fs.existsSync(path.join(dataDir, 'drives')) ? du(path.join(dataDir, 'drives'), false) : 0

  const started = performance.now()
  let created = 0
  while (created < total) {
    const n = Math.min(batch, total - created)
    const objects = Array.from({ length: n }, (_, i) => ({ name: `bench-${created + i}`, size, media: 'disk' }))
    await call('POST', '/api/2.0/drives/', { objects })
    created += n
  }
  const acceptedMs = performance.now() - started
  for (;;) {
    const ready = await call('GET', '/api/2.0/drives/?status=unmounted&limit=1&fields=uuid,status')
    if (ready.meta.total_count === total) break
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  const elapsed = (performance.now() - started) / 1000
  const drivesDir = path.join(dataDir, 'drives')
  const allocated = du(drivesDir, false) - emptyDu
  const apparent = du(drivesDir, true)
  const files = execFileSync('find', [drivesDir, '-name', '*.img'], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).length

  console.log(`drives created:        ${total} x ${human(size)} (bulk POSTs of ${batch}, HTTP + Basic auth)`)
  console.log(`all POSTs answered in: ${(acceptedMs / 1000).toFixed(2)} s`)
  console.log(`all unmounted after:   ${elapsed.toFixed(2)} s  (${(total / elapsed).toFixed(0)} drives/s, JOB_CONCURRENCY=${jobConcurrency})`)
  console.log(`image files:           ${files}`)
  console.log(`nominal size:          ${human(apparent)} (${apparent} bytes)`)
  console.log(`disk used (du):        ${human(allocated)} (${allocated} bytes, ${(allocated / files).toFixed(0)} bytes per drive incl. folders)`)
} finally {
  for (const fn of teardowns.reverse()) await fn()
  fs.rmSync(dataDir, { recursive: true, force: true })
  if (unregisterRun(process.pid)) stopDaemon()
}
