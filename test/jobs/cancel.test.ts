// Cancel through the API: reaches the running handler within a second (another "process"),
// cascades to children, runs cleanup; finished jobs cannot be cancelled. Wait (?wait=N).
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { enqueueJob } from '../../src/engine/enqueue.ts'
import type { JobHandler } from '../../src/engine/types.ts'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { abortableSleep, startEngine, waitForJob } from '../helpers/jobs.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const bob = await createUser(app)
const api = client(app, alice)

let abortedAt = 0
const cleanups: string[] = []
const slow: JobHandler = {
  async run (ctx) {
    ctx.signal.addEventListener('abort', () => { abortedAt = Date.now() }, { once: true })
    await abortableSleep(60_000, ctx.signal)
  },
  async cleanup (ctx, reason) { cleanups.push(`${ctx.job.id}:${reason.state}`) }
}
// a handler whose work commits as the cancel arrives: it hears the abort only after its last step
// (a resize's or a clone's settle transaction), then returns instead of throwing
const finishing: JobHandler = {
  async run (ctx) {
    await new Promise<void>(resolve => ctx.signal.addEventListener('abort', () => resolve(), { once: true }))
    ctx.log('work committed')
    return { made: 'it' }
  },
  async cleanup (ctx, reason) { cleanups.push(`${ctx.job.id}:${reason.state}`) }
}
// a heartbeat far longer than a second: the NOTIFY alone must deliver the cancel in time
await startEngine(t, app, { drive_clone: slow, drive_resize: finishing, server_clone: { async run () {}, async cleanup (ctx, r) { cleanups.push(`${ctx.job.id}:${r.state}`) } } }, { databaseUrl, heartbeatMs: 10_000 })

const enqueue = (operation: 'drive_clone' | 'server_clone' | 'drive_resize', parentId?: string) =>
  app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation, parentId }))

t.test('cancel reaches a running handler within a second and runs its cleanup', async t => {
  const { id } = await enqueue('drive_clone')
  await waitForJob(app, id, { states: ['started'] })
  await api.get(`/api/2.0/jobs/${id}/`) // authenticate once (scrypt) before timing
  const asked = Date.now()
  const res = await api.post(`/api/2.0/jobs/${id}/action/?do=cancel`)
  t.equal(res.statusCode, 202)
  t.equal(res.json().uuid, id)
  t.match(res.json().state, /^cancell(ing|ed)$/, 'cancelling while it is carried out (or done already)')
  const row = await waitForJob(app, id)
  t.ok(abortedAt - asked < 1000, `the signal aborted after ${abortedAt - asked} ms`)
  t.equal(row.state, 'cancelled')
  t.same(row.error, { error_type: 'cancelled', error_message: 'The job was cancelled' })
  t.ok(cleanups.includes(`${id}:cancelled`))
  const again = await api.post(`/api/2.0/jobs/${id}/action/?do=cancel`)
  t.equal(again.statusCode, 400, 'a finished job cannot be cancelled')
  t.equal(again.json()[0].error_point, 'state')
})

t.test('cancelling a parent cascades to running and queued children', async t => {
  cleanups.length = 0
  const { root, kids } = await app.prisma.$transaction(async tx => {
    const r = await enqueueJob(tx, { ownerId: alice.id, operation: 'server_clone' })
    const k1 = await enqueueJob(tx, { ownerId: alice.id, operation: 'drive_clone', parentId: r.id })
    const k2 = await enqueueJob(tx, { ownerId: alice.id, operation: 'drive_clone', parentId: r.id, runAt: new Date(Date.now() + 3_600_000) })
    return { root: r.id, kids: [k1.id, k2.id] }
  })
  await waitForJob(app, kids[0], { states: ['started'] })
  t.equal((await api.post(`/api/2.0/jobs/${root}/action/?do=cancel`)).statusCode, 202)
  const p = await waitForJob(app, root)
  t.equal(p.state, 'cancelled')
  const states = await Promise.all(kids.map(id => app.prisma.job.findUniqueOrThrow({ where: { id } })))
  t.same(states.map(s => s.state), ['cancelled', 'cancelled'], 'the running and the not-yet-due child are cancelled')
  t.same(cleanups.sort(), [`${kids[0]}:cancelled`, `${kids[1]}:cancelled`, `${root}:cancelled`].sort(), 'everyone cleaned up')
})

t.test('a cancel that comes as the work is done leaves the job a success, its work standing', async t => {
  cleanups.length = 0
  const { id } = await enqueue('drive_resize')
  await waitForJob(app, id, { states: ['started'] })
  t.equal((await api.post(`/api/2.0/jobs/${id}/action/?do=cancel`)).statusCode, 202)
  const row = await waitForJob(app, id)
  t.equal(row.state, 'success', 'the handler returned: its work is done, not undone')
  t.equal(row.error, null)
  t.same(row.result, { made: 'it' })
  t.same(cleanups, [], 'no cleanup undid what the handler committed')
  const log = (await api.get(`/api/2.0/jobs/${id}/log/`)).body
  t.match(log, /a cancel came as the job finished: its work was done, so it stands/)
  t.equal((await api.post(`/api/2.0/jobs/${id}/action/?do=cancel`)).statusCode, 400, 'finished: a second cancel is refused')
})

t.test('cancel: unknown do, other accounts, unknown jobs', async t => {
  const { id } = await enqueue('drive_clone')
  t.equal((await api.post(`/api/2.0/jobs/${id}/action/?do=explode`)).statusCode, 400)
  t.equal((await client(app, bob).post(`/api/2.0/jobs/${id}/action/?do=cancel`)).statusCode, 404, 'another account\'s job is 404')
  t.equal((await api.post(`/api/2.0/jobs/${randomUUID()}/action/?do=cancel`)).statusCode, 404)
  await api.post(`/api/2.0/jobs/${id}/action/?do=cancel`)
  await waitForJob(app, id)
})

t.test('?wait=N answers as soon as the job finishes, or after N seconds', async t => {
  const { id } = await enqueue('drive_clone')
  await waitForJob(app, id, { states: ['started'] })
  let t0 = Date.now()
  const timedOut = await api.get(`/api/2.0/jobs/${id}/?wait=1`)
  const waited = Date.now() - t0
  t.equal(timedOut.json().state, 'started')
  t.ok(waited >= 950 && waited < 2500, `answered after the wait (${waited} ms)`)
  t0 = Date.now()
  const pending = api.get(`/api/2.0/jobs/${id}/?wait=30`)
  setTimeout(() => { void api.post(`/api/2.0/jobs/${id}/action/?do=cancel`) }, 300)
  const res = await pending
  t.equal(res.json().state, 'cancelled')
  t.ok(Date.now() - t0 < 2500, `answered when the job finished (${Date.now() - t0} ms)`)
  t.equal((await api.get(`/api/2.0/jobs/${id}/?wait=61`)).statusCode, 400, 'at most 60 seconds')
})
