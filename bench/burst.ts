/**
 * Burst benchmark: `npx tsx bench/burst.ts [creates=200] [clones=100] [uploads=200]`, through the
 * real app over HTTP (default pool settings unless DB_POOL_MAX etc. are set). Fires each burst
 * all at once and prints the status counts; every answer must be 2xx or 503, and afterwards no
 * drive may be left in a transient status without an unfinished job (printed as "half-made").
 * Figures only, no asserts. Uses DATABASE_URL when set, otherwise the embedded test PostgreSQL.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { loadConfig } from '../src/config.ts'
import { buildTestApp, createUser } from '../test/helpers/app.ts'
import { halfMade } from '../test/helpers/consistency.ts'
import { registerRun, stopDaemon, unregisterRun } from '../test/setup/test-db.ts'

const [creates, clones, uploads] = [200, 100, 200].map((d, i) => Math.max(1, Number(process.argv[2 + i] ?? d)))
const dataDir = path.resolve('data', 'bench-burst')
const teardowns: Array<() => Promise<void> | void> = []
const t = { teardown: (fn: () => Promise<void> | void) => { teardowns.push(fn) } }
const MiB = 1024 * 1024

registerRun(process.pid)
fs.rmSync(dataDir, { recursive: true, force: true })
try {
  const env = loadConfig()
  const { app } = await buildTestApp(t, {
    config: { drivesDir: path.join(dataDir, 'drives'), dbPoolMax: env.dbPoolMax, dbPoolWaitMs: env.dbPoolWaitMs, dbPoolMaxWaiting: env.dbPoolMaxWaiting, maxEventLoopDelayMs: env.maxEventLoopDelayMs }
  })
  const user = await createUser(app)
  const address = await app.listen({ host: '127.0.0.1', port: 0 })
  const headers = { authorization: user.authorization, 'content-type': 'application/json' }
  const send = async (method: string, url: string, body?: string, type = 'application/json') => {
    try {
      const res = await fetch(address + url, { method, headers: { ...headers, 'content-type': type }, body })
      await res.arrayBuffer()
      return res.status
    } catch {
      return 0 // connection refused or reset
    }
  }
  // the first second after start may shed load (the loop was busy loading modules): retry
  let src = ''
  for (let i = 0; i < 40 && !src; i++) {
    const res = await fetch(address + '/api/2.0/drives/', { method: 'POST', headers, body: JSON.stringify({ name: 'src', size: MiB, media: 'disk' }) })
    if (res.status === 201) src = ((await res.json()) as { objects: Array<{ uuid: string }> }).objects[0].uuid
    else await new Promise(resolve => setTimeout(resolve, 500))
  }
  for (let i = 0; i < 200; i++) {
    const d = await (await fetch(address + `/api/2.0/drives/${src}/`, { headers })).json() as { status: string }
    if (d.status === 'unmounted') break
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  const bursts: Array<[string, () => Promise<number>, number]> = [
    ['creates', () => send('POST', '/api/2.0/drives/', JSON.stringify({ name: 'b', size: MiB, media: 'disk' })), creates],
    ['clones', () => send('POST', `/api/2.0/drives/${src}/action/?do=clone`, '{}'), clones],
    ['uploads', () => send('POST', '/api/2.0/drives/upload/u', 'x'.repeat(64 * 1024), 'application/octet-stream'), uploads]
  ]
  console.log(`load average before: ${os.loadavg().map(n => n.toFixed(2)).join(' ')}; DB_POOL_MAX=${env.dbPoolMax} DB_POOL_WAIT_MS=${env.dbPoolWaitMs}`)
  for (const [name, fire, n] of bursts) {
    const started = performance.now()
    const statuses = await Promise.all(Array.from({ length: n }, fire))
    const counts: Record<number, number> = {}
    for (const s of statuses) counts[s] = (counts[s] ?? 0) + 1
    const bad = statuses.filter(s => !(s >= 200 && s < 300) && s !== 503).length
    console.log(`${n} simultaneous ${name}: ${JSON.stringify(counts)} in ${((performance.now() - started) / 1000).toFixed(2)} s${bad ? `  (${bad} neither 2xx nor 503)` : ''}`)
  }
  for (let i = 0; i < 600; i++) {
    if (await app.prisma.job.count({ where: { state: { in: ['queued', 'started', 'cancelling'] } } }) === 0) break
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  const left = await halfMade(app.prisma)
  console.log(`half-made after the jobs settled: ${left.length}${left.length ? '\n  ' + left.slice(0, 10).join('\n  ') : ''}`)
  console.log(`load average after: ${os.loadavg().map(n => n.toFixed(2)).join(' ')}`)
} finally {
  for (const fn of teardowns.reverse()) await fn()
  fs.rmSync(dataDir, { recursive: true, force: true })
  if (unregisterRun(process.pid)) stopDaemon()
}
