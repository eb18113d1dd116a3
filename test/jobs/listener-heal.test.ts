// The LISTEN connection heals by itself (issue 12 item 2): it goes through a TCP proxy that turns
// half-open (bytes silently dropped both ways, no FIN, no RST) while jobs change. The listener
// notices through its liveness query within interval + timeout, reconnects with backoff once the
// path works again, re-LISTENs, and catches up: an SSE client gets every change made during the
// outage exactly once, a job enqueued during the outage is claimed at once after the reconnect,
// and a job enqueued afterwards is claimed through its NOTIFY wake-up (the poll interval is 2 min).
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { enqueueJob } from '../../src/engine/enqueue.ts'
import { JobEngine } from '../../src/engine/engine.ts'
import { PgListener } from '../../src/engine/listener.ts'
import { publishChange } from '../../src/engine/events.ts'
import { buildTestApp, createUser, eventually } from '../helpers/app.ts'
import { createTestDatabase } from '../helpers/db.ts'
import { sleep, waitForJob } from '../helpers/jobs.ts'
import { openSse } from '../helpers/sse.ts'
import { startTcpProxy } from '../helpers/tcp-proxy.ts'

const PING_MS = 500
const PING_TIMEOUT_MS = 1000

const databaseUrl = await createTestDatabase(t)
const target = new URL(databaseUrl)
const proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) })
t.teardown(() => proxy.close())
const { app } = await buildTestApp(t, {
  databaseUrl,
  runWorkers: false,
  // only the LISTEN connection goes through the proxy; queries and the SSE route's reads do not
  listener: {
    databaseUrl: proxy.url(databaseUrl),
    pingIntervalMs: PING_MS,
    pingTimeoutMs: PING_TIMEOUT_MS,
    connectTimeoutMs: 1000,
    keepAliveInitialDelayMs: 1000,
    backoffMinMs: 100,
    backoffMaxMs: 1000
  }
})
await app.listen({ host: '127.0.0.1', port: 0 })
const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
const alice = await createUser(app)

const started: Array<{ id: string, at: number }> = []
// a worker that only NOTIFY wake-ups (or a reconnect) can make claim within the test
const engine = new JobEngine({ prisma: app.prisma, log: app.log, concurrency: 2, leaseSeconds: 30, pollMs: 120_000, listener: app.jobListener })
engine.register('server_start', { async run (ctx) { started.push({ id: ctx.job.id, at: Date.now() }); return 'ok' } })
engine.start()
t.teardown(() => engine.stop())

const runnable = () => app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation: 'server_start' }))
// parked: a change event, but nothing for a worker to do
const parked = () => app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation: 'drive_clone', runAt: new Date(Date.now() + 3_600_000) }))

t.test('a half-open LISTEN connection is noticed and replaced; no event and no wake-up is lost', async t => {
  const sse = await openSse(base, '/api/2.0/jobs/events/', { authorization: alice.authorization })
  t.teardown(() => sse.close())
  await sleep(200)
  const fromId = await app.events.lastId()

  // before: a wake-up reaches the worker (the first poll has long run; the next is 2 min away)
  await sleep(300)
  const warm = await runnable()
  await waitForJob(app, warm.id, { timeoutMs: 5000 })
  t.equal(app.jobListener.losses, 0)

  proxy.stall()
  const stalledAt = Date.now()
  const during: string[] = []
  for (let i = 0; i < 5; i++) during.push((await parked()).id)
  const missed = await runnable()
  await publishChange(app.prisma, { ownerId: alice.id, resourceType: 'drives', resourceId: randomUUID() })
  await sleep(200)
  t.equal((await app.prisma.job.findUniqueOrThrow({ where: { id: missed.id } })).state, 'queued', 'its wake-up was lost in the stalled connection')

  await eventually(async () => app.jobListener.losses >= 1, { timeoutMs: 10_000, intervalMs: 20 })
  const noticedMs = Date.now() - stalledAt
  t.ok(noticedMs <= PING_MS + PING_TIMEOUT_MS + 1500, `the listener noticed the half-open connection by itself in ${noticedMs} ms`)
  t.notOk(app.jobListener.connected)

  // still stalled: reconnects fail (their connect times out) and back off; changes go on meanwhile
  for (let i = 0; i < 3; i++) during.push((await parked()).id)
  await sleep(1500)
  t.notOk(app.jobListener.connected, 'no connection while the path is stalled')

  proxy.resume()
  const resumedAt = Date.now()
  await eventually(async () => app.jobListener.connected && app.events.caughtUp > 0, { timeoutMs: 10_000, intervalMs: 20 })
  t.comment(`reconnected and caught up ${Date.now() - resumedAt} ms after the path came back`)

  const m = await waitForJob(app, missed.id, { timeoutMs: 5000 })
  t.equal(m.state, 'success', 'the job enqueued during the outage was claimed once the listener reconnected')

  const after = await runnable()
  const a = await waitForJob(app, after.id, { timeoutMs: 5000 })
  t.equal(a.state, 'success', 'a job enqueued after the reconnect is claimed through its wake-up')
  t.ok(started.find(s => s.id === after.id), 'by the worker whose only poll is minutes away')

  // every change of alice's since the stream opened reached it, each at most once. A stream drops a
  // frame that repeats the state it last sent for that object (events.ts FrameFilter: several
  // events of one job committed before their frames load the same newest state), so the check is
  // per object: each changed object's newest state arrived, and no event id came twice
  const events = await app.prisma.event.findMany({ where: { ownerId: alice.id, id: { gt: fromId } }, orderBy: { id: 'asc' } })
  const expected = events.map(e => e.id.toString())
  const uris = [...new Set(events.map(e => e.resourceUri))]
  await eventually(async () => uris.every(u => sse.frames.some(f => f.data?.resource_uri === u)), { timeoutMs: 10_000 })
  await sleep(500)
  const got = sse.frames.map(f => f.id!)
  const duringIds = new Set((await app.prisma.event.findMany({ where: { resourceId: { in: during } } })).map(e => e.id.toString()))
  t.equal(duringIds.size, during.length, 'one event per job changed during the outage')
  t.ok([...duringIds].every(id => got.includes(id)), 'the SSE client got every change made during the outage')
  t.equal(new Set(got).size, got.length, 'and none twice')
  t.ok(got.every(id => expected.includes(id)), 'only the account\'s changes since the stream opened')
  const final = (await app.prisma.job.findMany({ where: { id: { in: [warm.id, missed.id, after.id] } } }))
  for (const j of final) {
    const last = sse.frames.filter(f => f.data?.resource_uri === `/api/2.0/jobs/${j.id}/`).at(-1)
    t.equal(last?.data?.object?.state, j.state, `job ${j.id.slice(0, 8)}: its last frame shows its final state`)
  }
  t.ok(expected.length >= 10, `${expected.length} events checked`)
})

t.test('a cut connection reconnects with backoff and resumes delivery', async t => {
  const listener = new PgListener(proxy.url(databaseUrl), undefined, { pingIntervalMs: PING_MS, pingTimeoutMs: PING_TIMEOUT_MS, connectTimeoutMs: 1000, backoffMinMs: 100, backoffMaxMs: 800 })
  await listener.start()
  t.teardown(() => listener.close())
  const got: string[] = []
  listener.on('heal_test', p => got.push(p))
  let reconnects = 0
  listener.onReconnected(() => { reconnects++ })
  await sleep(100)
  await app.prisma.$executeRaw`SELECT pg_notify('heal_test', 'one')`
  await eventually(async () => got.includes('one'))
  proxy.cut()
  await eventually(async () => !listener.connected, { timeoutMs: 5000, intervalMs: 20 })
  await sleep(1500) // refused reconnects back off meanwhile
  proxy.resume()
  await eventually(async () => reconnects === 1, { timeoutMs: 5000, intervalMs: 20 })
  await app.prisma.$executeRaw`SELECT pg_notify('heal_test', 'two')`
  await eventually(async () => got.includes('two'))
  t.same(got, ['one', 'two'], 'the channel was LISTENed again')
  t.equal(listener.losses, 1)
})
