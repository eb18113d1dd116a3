// Overload is a 503 `concurrency` with Retry-After, never a 500: a pool of three connections and a
// burst of creates, clones, lists and uploads answer only 2xx or 503, and leave nothing half-made.
import t from 'tap'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { halfMade } from '../helpers/consistency.ts'
import { transientDatabaseError } from '../../src/db/transient.ts'

const { app } = await buildTestApp(t, { config: { dbPoolMax: 3, dbPoolWaitMs: 100, dbPoolMaxWaiting: 1000 } })
// The setup is not what this file tests. pg's pool spends its wait (100 ms here) on opening a new
// connection too, and on a loaded machine that can take longer, failing the setup's own queries.
// So the setup retries those, and opens the pool's three connections before the burst: the burst
// then waits for busy connections, as the test means, rather than for slow new ones.
async function settled<T> (what: string, fn: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn()
    } catch (err) {
      if (i >= 100 || transientDatabaseError(err) === undefined) throw err
      t.comment(`${what}: ${String((err as Error).message).split('\n').at(-1)}; retrying`)
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }
}
const user = await settled('creating the account', () => createUser(app))
const api = client(app, user)
async function warmPool (): Promise<void> {
  // three at once, each holding its connection a moment, so each needs a connection of its own
  for (let i = 0; i < 20 && app.dbPool.totalCount < 3; i++) {
    await Promise.all(Array.from({ length: 3 }, () => settled('opening a connection', () => app.dbPool.query('SELECT pg_sleep(0.05)'))))
  }
}
const MiB = 1024 * 1024

function tally (statuses: number[]): Record<number, number> {
  const out: Record<number, number> = {}
  for (const s of statuses) out[s] = (out[s] ?? 0) + 1
  return out
}

t.test('a burst against a pool of three', async t => {
  let source = await api.post('/api/2.0/drives/', { name: 'src', size: MiB, media: 'disk' })
  for (let i = 0; i < 50 && source.statusCode === 503; i++) {
    await new Promise(resolve => setTimeout(resolve, 100))
    source = await api.post('/api/2.0/drives/', { name: 'src', size: MiB, media: 'disk' })
  }
  t.equal(source.statusCode, 201, source.body)
  const src = source.json().objects[0].uuid
  // let the create job finish so the source can be cloned
  for (let i = 0; i < 100 && (await api.get(`/api/2.0/drives/${src}/`)).json().status !== 'unmounted'; i++) await new Promise(resolve => setTimeout(resolve, 50))
  await warmPool()
  t.equal(app.dbPool.totalCount, 3, 'the pool holds its three connections before the burst')
  const burst = await Promise.all([
    ...Array.from({ length: 60 }, (_, i) => api.post('/api/2.0/drives/', { name: `d${i}`, size: MiB, media: 'disk' })),
    ...Array.from({ length: 20 }, () => api.post(`/api/2.0/drives/${src}/action/?do=clone`, {})),
    ...Array.from({ length: 20 }, (_, i) => api.raw('POST', `/api/2.0/drives/upload/u${i}`, 'x'.repeat(4096), { 'content-type': 'application/octet-stream' })),
    ...Array.from({ length: 40 }, () => api.get('/api/2.0/drives/detail/'))
  ])
  const counts = tally(burst.map(r => r.statusCode))
  t.comment(`status counts: ${JSON.stringify(counts)}`)
  for (const res of burst) {
    t.ok(res.statusCode < 300 || res.statusCode === 503, `${res.statusCode} ${res.statusCode >= 300 ? res.body.slice(0, 160) : ''}`)
    if (res.statusCode === 503) {
      t.equal(res.json()[0].error_type, 'concurrency')
      t.equal(res.headers['retry-after'], '1')
    }
  }
  t.ok(counts[503] > 0, 'some requests were shed (the pool is tiny)')
  // jobs finish; nothing is left in a transient status without its job
  for (let i = 0; i < 200; i++) {
    const busy = await app.prisma.job.count({ where: { state: { in: ['queued', 'started'] } } })
    if (busy === 0) break
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.same(await halfMade(app.prisma), [], 'nothing half-made')
})

t.test('requests beyond the waiting limit are refused at once', async t => {
  const { app: small } = await buildTestApp(t, { runWorkers: false, config: { dbPoolMax: 1, dbPoolWaitMs: 2000, dbPoolMaxWaiting: 3 } })
  const u = await createUser(small)
  const c = client(small, u)
  await c.get('/api/2.0/drives/') // credentials cached
  // the only connection is busy; the first requests queue for it, later ones are refused at once
  // Prisma queries start when awaited; its outcome is kept (a failure must fail the test below, not
  // reject with no handler while the test waits, which ends the whole test process)
  const hold = small.prisma.$queryRaw`SELECT 1 FROM pg_sleep(1.5)`.then(() => undefined, (err: unknown) => err)
  await new Promise(resolve => setTimeout(resolve, 100))
  const queued = Array.from({ length: 5 }, () => c.get('/api/2.0/drives/detail/'))
  await new Promise(resolve => setTimeout(resolve, 100))
  const started = Date.now()
  const refused = await Promise.all(Array.from({ length: 5 }, () => c.get('/api/2.0/drives/detail/')))
  t.ok(Date.now() - started < 1000, 'refused without waiting for the pool')
  for (const r of refused) {
    t.equal(r.statusCode, 503, 'refused at once')
    t.equal(r.json()[0].error_type, 'concurrency')
    t.equal(r.headers['retry-after'], '1')
  }
  t.equal(await hold, undefined, 'the query holding the connection ran')
  for (const r of await Promise.all(queued)) t.equal(r.statusCode, 200, 'the queued ones are served')
})
