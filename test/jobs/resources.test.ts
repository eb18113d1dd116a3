// Resource conflicts (503 concurrency), the jobs list of drives/servers, and publishChange.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { enqueueJob } from '../../src/engine/enqueue.ts'
import { lockResources } from '../../src/engine/resources.ts'
import { DomainError } from '../../src/domain/errors.ts'
import { toApiError } from '../../src/http/error-handler.ts'
import { jobRefsFor } from '../../src/features/jobs/view.ts'
import { publishChange } from '../../src/engine/events.ts'
import { buildTestApp, createUser } from '../helpers/app.ts'
import { startEngine, waitForJob } from '../helpers/jobs.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)

async function enqueueWith (resources: Array<{ type: 'drives' | 'servers', id: string, mode?: 'read' | 'write' }>) {
  return app.prisma.$transaction(async tx => {
    await lockResources(tx, resources)
    return enqueueJob(tx, { ownerId: alice.id, operation: 'drive_clone', resources, runAt: new Date(Date.now() + 3_600_000) })
  })
}

t.test('write conflicts with anything, read only with write', async t => {
  const drive = randomUUID()
  await enqueueWith([{ type: 'drives', id: drive, mode: 'read' }])
  await enqueueWith([{ type: 'drives', id: drive, mode: 'read' }])
  t.pass('two readers (clone sources) may share a drive')
  const err = await enqueueWith([{ type: 'drives', id: drive, mode: 'write' }]).catch(e => e)
  t.ok(err instanceof DomainError)
  t.equal(err.code, 'busy')
  t.equal(toApiError(err).statusCode, 503)
  t.equal(toApiError(err).errorType, 'concurrency')
  const other = randomUUID()
  await enqueueWith([{ type: 'servers', id: other }])
  const err2 = await enqueueWith([{ type: 'servers', id: other, mode: 'read' }]).catch(e => e)
  t.equal(err2.code, 'busy', 'a reader is refused while a writer holds it')
})

t.test('racing transactions are serialised: exactly one wins', async t => {
  const drive = randomUUID()
  const results = await Promise.allSettled(Array.from({ length: 6 }, () => enqueueWith([{ type: 'drives', id: drive }])))
  t.equal(results.filter(r => r.status === 'fulfilled').length, 1)
  t.ok(results.filter(r => r.status === 'rejected').every(r => (r as PromiseRejectedResult).reason.code === 'busy'))
})

t.test('finished jobs no longer hold their resources; jobRefsFor lists jobs newest first', async t => {
  const engine = await startEngine(t, app, { drive_resize: { async run () {} } }, { databaseUrl })
  const drive = randomUUID()
  const first = await app.prisma.$transaction(async tx => {
    await lockResources(tx, [{ type: 'drives', id: drive }])
    return enqueueJob(tx, { ownerId: alice.id, operation: 'drive_resize', resources: [{ type: 'drives', id: drive }] })
  })
  await waitForJob(app, first.id)
  const second = await app.prisma.$transaction(async tx => {
    await lockResources(tx, [{ type: 'drives', id: drive }])
    return enqueueJob(tx, { ownerId: alice.id, operation: 'drive_resize', resources: [{ type: 'drives', id: drive }] })
  })
  await waitForJob(app, second.id)
  const refs = await jobRefsFor(app.prisma, 'drives', [drive, randomUUID()])
  t.same(refs.get(drive), [
    { resource_uri: `/api/2.0/jobs/${second.id}/`, uuid: second.id },
    { resource_uri: `/api/2.0/jobs/${first.id}/`, uuid: first.id }
  ])
  t.equal([...refs.values()][1].length, 0, 'every id asked for has an entry')
  const job = await app.prisma.job.findUniqueOrThrow({ where: { id: first.id } })
  t.same(job.resources, [`/api/2.0/drives/${drive}/`])
  await engine.stop()
})

t.test('publishChange writes an event row and notifies every process at commit', async t => {
  const id = randomUUID()
  const heard = app.events.waitForChange(id, 5000).then(() => Date.now())
  const before = Date.now()
  await app.prisma.$transaction(tx => publishChange(tx, { ownerId: alice.id, resourceType: 'drives', resourceId: id }))
  const at = await heard
  t.ok(at - before < 2000, 'heard through LISTEN/NOTIFY')
  const rows = await app.prisma.event.findMany({ where: { resourceId: id } })
  t.equal(rows.length, 1)
  t.equal(rows[0].resourceUri, `/api/2.0/drives/${id}/`)
  const rolledBack = randomUUID()
  await app.prisma.$transaction(async tx => {
    await publishChange(tx, { ownerId: alice.id, resourceType: 'servers', resourceId: rolledBack })
    throw new Error('roll back')
  }).catch(() => {})
  t.equal(await app.prisma.event.count({ where: { resourceId: rolledBack } }), 0, 'nothing is published by a rolled-back transaction')
})
