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

t.test('on its own (no transaction) on Prisma, a pg pool or a pg client: always one atomic statement', async t => {
  const outside = await app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation: 'server_clone' }))
  const client = await app.dbPool.connect()
  t.teardown(() => client.release())
  for (const [name, db] of [['prisma', app.prisma], ['pool', app.dbPool], ['client', client]] as const) {
    const mid = newJobId()
    const later = new Date(Date.now() + 7_200_000)
    const alone = await enqueueJobs(db, [
      { ownerId: alice.id, operation: 'drive_clone', runAt: later },
      { ownerId: alice.id, operation: 'drive_clone', parentId: outside.id },
      // the child of an in-batch job whose parent is outside: its root is read by the statement too
      { id: mid, ownerId: alice.id, operation: 'drive_clone', parentId: outside.id, runAt: later },
      { ownerId: alice.id, operation: 'drive_flatten', parentId: mid }
    ])
    const rows = await app.prisma.job.findMany({ where: { id: { in: alone.map(j => j.id) } } })
    const row = (k: number) => rows.find(r => r.id === alone[k].id)!
    t.same([0, 1, 2, 3].map(k => row(k).rootId), [alone[0].id, outside.id, outside.id, outside.id], `${name}: roots of outside parents read in the statement`)
    t.equal(row(0).runAt.getTime(), later.getTime(), `${name}: the batch's shared run_at`)
    t.ok(Math.abs(row(1).runAt.getTime() - Date.now()) < 60_000, `${name}: a job without run_at in a batch that has one runs now`)
    t.equal(row(3).parentId, mid, `${name}: parent kept`)
    // a failing batch leaves nothing behind: the duplicate id fails the one statement
    const dup = newJobId()
    await t.rejects(enqueueJobs(db, [{ id: dup, ownerId: alice.id, operation: 'drive_clone' }, { id: dup, ownerId: alice.id, operation: 'drive_clone' }]), `${name}: duplicate id refused`)
    t.equal(await app.prisma.job.count({ where: { id: dup } }), 0, `${name}: no job of the failed batch`)
    t.equal(await app.prisma.event.count({ where: { resourceId: dup } }), 0, `${name}: and no event`)
    // a parent that does not exist: refused, and the batch's other jobs are not written either
    const first = newJobId()
    await t.rejects(enqueueJobs(db, [{ id: first, ownerId: alice.id, operation: 'drive_clone' }, { ownerId: alice.id, operation: 'drive_clone', parentId: newJobId() }]), `${name}: missing parent refused`)
    t.equal(await app.prisma.job.count({ where: { id: first } }), 0, `${name}: nothing of that batch written`)
  }
})
