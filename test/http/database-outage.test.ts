// With PostgreSQL stalled or gone, requests answer 503 within a bounded time (never hang, never
// 500), /readyz answers 503 within a second, /healthz stays 200 and says the database is down;
// when the database is back, the same process serves again.
import t from 'tap'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { createTestDatabase } from '../helpers/db.ts'
import { startTcpProxy } from '../helpers/tcp-proxy.ts'

const direct = await createTestDatabase(t)
const u = new URL(direct)
const proxy = await startTcpProxy({ host: u.hostname, port: Number(u.port || 5432) })
t.teardown(() => proxy.close())
const { app } = await buildTestApp(t, {
  databaseUrl: proxy.url(direct),
  runWorkers: false,
  config: { dbPoolMax: 3, dbPoolWaitMs: 500, dbQueryTimeoutMs: 1500 }
})
const user = await createUser(app)
const api = client(app, user)

async function timed<T> (fn: () => Promise<T>): Promise<{ value: T, ms: number }> {
  const start = Date.now()
  const value = await fn()
  return { value, ms: Date.now() - start }
}

t.test('the database up: everything answers', async t => {
  t.equal((await api.get('/api/2.0/drives/')).statusCode, 200)
  t.equal((await app.inject('/readyz')).statusCode, 200)
  t.same((await app.inject('/healthz')).json(), { status: 'ok', database: 'up' })
})

for (const mode of ['stall', 'cut'] as const) {
  t.test(`the database ${mode === 'stall' ? 'stalled' : 'gone'}`, async t => {
    // a different account each round, so the credential cache cannot hide the outage
    const other = await createUser(app)
    proxy[mode]()
    t.teardown(() => proxy.resume())
    const ready = await timed(() => app.inject('/readyz'))
    t.equal(ready.value.statusCode, 503, '/readyz is 503')
    t.ok(ready.ms < 1200, `/readyz answered in ${ready.ms} ms`)
    t.same(ready.value.json(), { status: 'database unreachable', database: 'down' })
    await new Promise(resolve => setTimeout(resolve, 1100)) // past the health cache
    const health = await timed(() => app.inject('/healthz'))
    t.equal(health.value.statusCode, 200, '/healthz stays 200')
    t.equal(health.value.json().database, 'down', '/healthz says the database is down')
    t.ok(health.ms < 1000, `/healthz answered in ${health.ms} ms`)

    const requests = await timed(() => Promise.all([
      api.get('/api/2.0/drives/'),
      api.post('/api/2.0/drives/', { name: 'd', size: 1024 * 1024, media: 'disk' }),
      api.get('/api/2.0/jobs/'),
      client(app, other).get('/api/2.0/servers/'),
      api.get('/api/2.0/drives/'),
      api.get('/api/2.0/drives/')
    ]))
    for (const res of requests.value) {
      t.equal(res.statusCode, 503, `503: ${res.body.slice(0, 160)}`)
      t.ok(['database', 'concurrency'].includes(res.json()[0]?.error_type), 'database or concurrency')
      t.ok(res.headers['retry-after'], 'Retry-After')
    }
    t.ok(requests.ms < 5000, `answered within ${requests.ms} ms`)

    proxy.resume()
    await eventually(async () => (await api.get('/api/2.0/drives/')).statusCode === 200, { timeoutMs: 10_000, intervalMs: 200 })
    t.equal((await app.inject('/readyz')).statusCode, 200, 'ready again without a restart')
  })
}
