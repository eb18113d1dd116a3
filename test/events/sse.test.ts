// Server-sent events: frames for job, drive and server changes, only the account's own, the job
// filter, resumption with Last-Event-ID, and delivery across processes sharing the database.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { enqueueJob } from '../../src/engine/enqueue.ts'
import { publishChange } from '../../src/engine/events.ts'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { openSse } from '../helpers/sse.ts'
import { checkJobFrames, steppingHandler } from '../helpers/frames.ts'
import { startEngine } from '../helpers/jobs.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
await app.listen({ host: '127.0.0.1', port: 0 })
const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
const alice = await createUser(app)
const bob = await createUser(app)
const auth = (u: typeof alice) => ({ authorization: u.authorization })

const enqueue = (ownerId: string) => app.prisma.$transaction(tx => enqueueJob(tx, { ownerId, operation: 'drive_clone', runAt: new Date(Date.now() + 3_600_000) }))

t.test('an account hears its own changes and nobody else\'s', async t => {
  const a = await openSse(base, '/api/2.0/jobs/events/', auth(alice))
  const b = await openSse(base, '/api/2.0/jobs/events/', auth(bob))
  t.teardown(() => { a.close(); b.close() })
  t.equal(a.status, 200)
  await new Promise(resolve => setTimeout(resolve, 100))
  const mine = await enqueue(alice.id)
  const theirs = await enqueue(bob.id)
  const f = await a.next(f => f.data.resource_uri === `/api/2.0/jobs/${mine.id}/`)
  t.equal(f.event, 'jobs')
  t.match(f.id, /^\d+$/, 'id is the events row id')
  t.equal(f.data.resource_type, 'jobs')
  t.equal(f.data.object.uuid, mine.id, 'the frame carries the full job')
  t.equal(f.data.object.state, 'queued')
  await b.next(f => f.data.resource_uri === `/api/2.0/jobs/${theirs.id}/`)
  const drive = randomUUID()
  await publishChange(app.prisma, { ownerId: alice.id, resourceType: 'drives', resourceId: drive })
  const d = await a.next(f => f.data.resource_uri === `/api/2.0/drives/${drive}/`)
  t.equal(d.event, 'drives')
  await new Promise(resolve => setTimeout(resolve, 200))
  t.notOk(a.frames.some(f => f.data.resource_uri.includes(theirs.id)), 'alice never hears bob\'s job')
  t.notOk(b.frames.some(f => f.data.resource_uri.includes(mine.id) || f.data.resource_uri.includes(drive)), 'bob never hears alice\'s objects')
})

t.test('Last-Event-ID resumes after the last frame received', async t => {
  const first = await openSse(base, '/api/2.0/jobs/events/', auth(alice))
  await new Promise(resolve => setTimeout(resolve, 100))
  const j1 = await enqueue(alice.id)
  const seen = await first.next(f => f.data.resource_uri.includes(j1.id))
  first.close()
  const j2 = await enqueue(alice.id)
  const j3 = await enqueue(alice.id)
  await enqueue(bob.id)
  const resumed = await openSse(base, '/api/2.0/jobs/events/', { ...auth(alice), 'last-event-id': seen.id! })
  t.teardown(() => resumed.close())
  await resumed.next(f => f.data.resource_uri.includes(j3.id))
  const uris = resumed.frames.map(f => f.data.resource_uri)
  t.ok(uris.some(u => u.includes(j2.id)), 'missed frames are replayed')
  t.notOk(uris.some(u => u.includes(j1.id)), 'frames up to Last-Event-ID are not')
  t.ok(resumed.frames.every(f => BigInt(f.id!) > BigInt(seen.id!)))
  const ids = resumed.frames.map(f => BigInt(f.id!))
  t.same(ids, [...ids].sort((x, y) => (x < y ? -1 : 1)), 'replayed in id order')
  const j4 = await enqueue(alice.id)
  await resumed.next(f => f.data.resource_uri.includes(j4.id))
  t.pass('and the stream goes on live')
})

t.test('?job= keeps one job\'s frames; another account\'s job is 404', async t => {
  const j = await enqueue(alice.id)
  const other = await enqueue(alice.id)
  const s = await openSse(base, `/api/2.0/jobs/events/?job=${j.id}&last_event_id=0`, auth(alice))
  t.teardown(() => s.close())
  await s.next(f => f.data.resource_uri.includes(j.id))
  await app.prisma.$transaction(tx => publishChange(tx, { ownerId: alice.id, resourceType: 'jobs', resourceId: other.id }))
  // a real change (a frame repeating the object the stream already sent is not sent again)
  await app.prisma.$transaction(async tx => {
    await tx.job.update({ where: { id: j.id }, data: { description: 'changed', lastModified: new Date() } })
    await publishChange(tx, { ownerId: alice.id, resourceType: 'jobs', resourceId: j.id })
  })
  await s.next(f => f.data.resource_uri.includes(j.id) && s.frames.length >= 2)
  t.ok(s.frames.every(f => f.data.resource_uri === `/api/2.0/jobs/${j.id}/`))
  const res = await client(app, bob).get(`/api/2.0/jobs/events/?job=${j.id}`)
  t.equal(res.statusCode, 404)
  t.equal((await app.inject({ url: '/api/2.0/jobs/events/' })).statusCode, 401, 'authentication is required')
})

t.test('an event id past int8 is 400 before the stream opens; the largest int8 still opens it', async t => {
  const status = async (query: string, headers: Record<string, string> = {}) => {
    const controller = new AbortController()
    const res = await fetch(`${base}/api/2.0/jobs/events/${query}`, { headers: { ...auth(alice), ...headers }, signal: controller.signal })
    const body = res.status === 200 ? undefined : await res.json() as any
    controller.abort()
    return { status: res.status, point: body?.[0]?.error_point, type: body?.[0]?.error_type }
  }
  t.same(await status('', { 'last-event-id': '99999999999999999999' }), { status: 400, point: 'Last-Event-ID', type: 'validation' })
  t.same(await status('', { 'last-event-id': '9223372036854775808' }), { status: 400, point: 'Last-Event-ID', type: 'validation' })
  t.same(await status('?last_event_id=9223372036854775808'), { status: 400, point: 'last_event_id', type: 'validation' })
  t.same(await status('?last_event_id=99999999999999999999'), { status: 400, point: 'last_event_id', type: 'validation' })
  t.equal((await status('?last_event_id=9223372036854775807')).status, 200)
  t.equal((await status('', { 'last-event-id': '0009223372036854775807' })).status, 200)
})

t.test('a change made by another process is delivered here', async t => {
  const other = await buildTestApp(t, { runWorkers: false, databaseUrl })
  const s = await openSse(base, '/api/2.0/jobs/events/', auth(alice))
  t.teardown(() => s.close())
  await new Promise(resolve => setTimeout(resolve, 100))
  const id = randomUUID()
  await publishChange(other.app.prisma, { ownerId: alice.id, resourceType: 'servers', resourceId: id })
  const f = await s.next(f => f.data.resource_uri === `/api/2.0/servers/${id}/`)
  t.equal(f.data.resource_type, 'servers')
})

t.test('one frame per change: each frame names its change, a job\'s success arrives once', async t => {
  await startEngine(t, app, { server_stop: steppingHandler }, { databaseUrl, pollMs: 100 })
  const s = await openSse(base, '/api/2.0/jobs/events/', auth(alice))
  t.teardown(() => s.close())
  await new Promise(resolve => setTimeout(resolve, 100))
  const ids = []
  for (let i = 0; i < 3; i++) ids.push((await app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation: 'server_stop' }))).id)
  for (const id of ids) await s.next(f => f.data.resource_uri === `/api/2.0/jobs/${id}/` && f.data.object?.state === 'success', 15_000)
  await new Promise(resolve => setTimeout(resolve, 500))
  for (const id of ids) checkJobFrames(t, s.frames.filter(f => f.data.resource_uri === `/api/2.0/jobs/${id}/`).map(f => f.data))
})
