// Bulk enqueue: rows travel sparse (what the batch shares sent once, defaults left out), and the
// change events are derived in SQL: every field lands as given, defaults apply, and the events are
// each new job once ('added') and each root that existed before once ('changed'), in input order.
import t from 'tap'
import { enqueueJob, enqueueJobs, newJobId } from '../../src/engine/enqueue.ts'
import { buildTestApp, createUser } from '../helpers/app.ts'

const { app } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const bob = await createUser(app)

t.test('a mixed batch: every field as given, defaults where left out, events in order', async t => {
  const outside = await app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation: 'server_clone' }))
  const before = (await app.prisma.event.aggregate({ _max: { id: true } }))._max.id ?? 0n
  const parent = newJobId()
  const runAt = new Date(Date.now() + 3_600_000)
  const drive = '11111111-2222-4333-8444-555555555555'
  const jobs = await app.prisma.$transaction(tx => enqueueJobs(tx, [
    { ownerId: alice.id, operation: 'drive_clone' },
    { id: parent, ownerId: alice.id, operation: 'server_clone', params: { name: 'p' } },
    { ownerId: alice.id, operation: 'drive_clone', parentId: parent, resources: [{ type: 'drives', id: drive, mode: 'read' }] },
    { ownerId: alice.id, operation: 'drive_clone', parentId: outside.id, bytesTotal: 1234.9, description: 'copying' },
    { ownerId: bob.id, operation: 'drive_resize', parentId: undefined, runAt, maxAttempts: 7 },
    { ownerId: alice.id, operation: 'drive_clone', parentId: outside.id }
  ]))
  t.equal(jobs[1].id, parent, 'a given id is kept')
  const rows = await app.prisma.job.findMany({ where: { id: { in: jobs.map(j => j.id) } } })
  const row = (k: number) => rows.find(r => r.id === jobs[k].id)!
  t.match(row(0), { ownerId: alice.id, operation: 'drive_clone', params: {}, parentId: null, rootId: jobs[0].id, resources: [], bytesTotal: null, description: null, maxAttempts: 3, state: 'queued' })
  t.match(row(1), { operation: 'server_clone', params: { name: 'p' }, rootId: parent })
  t.match(row(2), { parentId: parent, rootId: parent, resources: [`/api/2.0/drives/${drive}/`] })
  t.match(row(3), { parentId: outside.id, rootId: outside.id, bytesTotal: 1234n, description: 'copying' })
  t.match(row(4), { ownerId: bob.id, operation: 'drive_resize', maxAttempts: 7 })
  t.equal(row(4).runAt.getTime(), runAt.getTime(), 'run_at as given')
  t.ok(Math.abs(row(0).runAt.getTime() - Date.now()) < 60_000, 'run_at defaults to now')
  t.same(await app.prisma.jobResource.findMany({ where: { jobId: jobs[2].id }, select: { resourceType: true, resourceId: true, mode: true } }),
    [{ resourceType: 'drives', resourceId: drive, mode: 'read' }], 'resource links written')
  const events = await app.prisma.event.findMany({ where: { id: { gt: before } }, orderBy: { id: 'asc' } })
  t.same(events.map(e => [e.resourceId, e.change, e.ownerId]), [
    [jobs[0].id, 'added', alice.id],
    [jobs[1].id, 'added', alice.id],
    [jobs[2].id, 'added', alice.id],
    [jobs[3].id, 'added', alice.id],
    [outside.id, 'changed', alice.id],
    [jobs[4].id, 'added', bob.id],
    [jobs[5].id, 'added', alice.id]
  ], 'each new job once, the outside root once where its first child is, each with its owner')
  t.ok(events.every(e => e.resourceUri === `/api/2.0/jobs/${e.resourceId}/` && e.resourceType === 'jobs'))
  const created = jobs.map((_, k) => row(k).created.getTime())
  t.ok(created.every((c, k) => k === 0 || c >= created[k - 1]), 'rows written in input order')
})

t.test('on its own (no transaction): one atomic statement, or a transaction of its own for an outside parent', async t => {
  const outside = await app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation: 'server_clone' }))
  const alone = await enqueueJobs(app.prisma, [{ ownerId: alice.id, operation: 'drive_clone' }, { ownerId: alice.id, operation: 'drive_clone', parentId: outside.id }])
  const rows = await app.prisma.job.findMany({ where: { id: { in: alone.map(j => j.id) } }, orderBy: { created: 'asc' } })
  t.same(rows.map(r => r.rootId), [alone[0].id, outside.id], 'the outside parent was looked up')
  // a failing batch leaves nothing behind: the duplicate id fails the one statement
  const dup = newJobId()
  await t.rejects(enqueueJobs(app.prisma, [{ id: dup, ownerId: alice.id, operation: 'drive_clone' }, { id: dup, ownerId: alice.id, operation: 'drive_clone' }]))
  t.equal(await app.prisma.job.count({ where: { id: dup } }), 0, 'no job of the failed batch')
  t.equal(await app.prisma.event.count({ where: { resourceId: dup } }), 0, 'and no event')
})
