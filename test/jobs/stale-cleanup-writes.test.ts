// A cleanup that passed the engine's fence check and then froze (held up longer than a lease while
// a newer attempt took the job over) writes nothing when it wakes: its row writes are fenced by its
// attempt, so they roll back with LeaseLost, and it deletes no image either; nothing is recorded.
// The newer attempt's state stands, and its own cleanup then undoes the job
// (test/helpers/takeover.ts). Each job goes straight to its cleanup: it is a cleanup-only retry
// attempt (checkpoint `cleanupPending`, as the engine requeues a cleanup that hit a transient
// error), so the first statement naming the locked table is its cleanup's, after the fence check.
import { randomUUID } from 'node:crypto'
import t from 'tap'
import { enqueueJob, newJobId } from '../../src/engine/enqueue.ts'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { appHandlers, startEngine, waitForJob } from '../helpers/jobs.ts'
import { jobRow, runStale, TAKEN_BY } from '../helpers/takeover.ts'
import { GiB, readyDrive } from '../drives/helpers.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const api = client(app, alice)
const drive = (id: string) => app.prisma.drive.findUnique({ where: { id } })
const PENDING = { cleanupPending: { state: 'error', error: { error_type: 'backend', error_message: 'the drive storage could not be reached' } } }

/** A ready drive, made by a worker that is gone again, so the next job stays queued. */
async function ready (t: Parameters<typeof startEngine>[0]): Promise<{ uuid: string }> {
  const setup = await startEngine(t, app, appHandlers(app), { databaseUrl })
  const d = await readyDrive(api, { size: GiB })
  await setup.stop()
  return d
}

/** Makes the job's next attempt only clean up, as the engine's requeue of a failed cleanup does. */
async function cleanupOnly (jobId: string): Promise<void> {
  await app.prisma.$executeRaw`UPDATE jobs SET checkpoint = ${JSON.stringify(PENDING)}::jsonb WHERE id = ${jobId}::uuid`
}

t.test('drive_create: a stale cleanup deletes neither the row nor the image', async t => {
  const d = (await api.post('/api/2.0/drives/', { name: 'disk', size: GiB, media: 'disk' })).json().objects[0]
  const jobId = d.jobs[0].uuid as string
  // the newer attempt's image, already made
  await app.storage.create(d.uuid, GiB)
  await cleanupOnly(jobId)
  const stale = await runStale(t, app, databaseUrl, jobId, 'drives')
  t.ok(stale.tookOver, 'the job was taken over while its cleanup waited')
  t.match(await drive(d.uuid), { status: 'creating', lockedByJob: jobId }, 'the stale cleanup did not delete the row')
  t.ok(await app.storage.exists(d.uuid), 'nor the image')
  t.match(await jobRow(app, jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'nor record anything')
  await stale.newer()
  t.equal((await waitForJob(app, jobId)).state, 'error', 'the newer attempt undid the create')
  t.equal(await drive(d.uuid), null)
  t.notOk(await app.storage.exists(d.uuid))
})

t.test('drive_clone: a stale cleanup deletes neither the destination (row, image) nor releases the source', async t => {
  const src = await ready(t)
  const res = await api.post(`/api/2.0/drives/${src.uuid}/action/?do=clone`, {})
  t.equal(res.statusCode, 202)
  const dst = res.json().objects[0].uuid as string
  const jobId = (await drive(dst))!.lockedByJob!
  // the newer attempt's copy, already in place
  await app.storage.create(dst, GiB)
  await cleanupOnly(jobId)
  const stale = await runStale(t, app, databaseUrl, jobId, 'drives')
  t.ok(stale.tookOver, 'the job was taken over while its cleanup waited')
  t.match(await drive(dst), { status: 'cloning_dst', lockedByJob: jobId }, 'the stale cleanup did not delete the destination row')
  t.ok(await app.storage.exists(dst), 'nor its image')
  t.equal((await drive(src.uuid))!.readers, 1, 'nor release the source')
  t.match(await jobRow(app, jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'nor record anything')
  await stale.newer()
  t.equal((await waitForJob(app, jobId)).state, 'error', 'the newer attempt undid the clone')
  t.equal(await drive(dst), null)
  t.notOk(await app.storage.exists(dst))
  t.equal((await drive(src.uuid))!.readers, 0)
})

t.test('drive_resize: a stale cleanup does not settle the drive', async t => {
  const d = await ready(t)
  t.equal((await api.post(`/api/2.0/drives/${d.uuid}/action/?do=resize`, { size: 2 * GiB })).statusCode, 202)
  const jobId = (await drive(d.uuid))!.lockedByJob!
  await cleanupOnly(jobId)
  const stale = await runStale(t, app, databaseUrl, jobId, 'drives')
  t.ok(stale.tookOver, 'the job was taken over while its cleanup waited')
  t.match(await drive(d.uuid), { status: 'resizing', size: BigInt(GiB), lockedByJob: jobId }, 'the stale cleanup did not settle the drive')
  t.match(await jobRow(app, jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'nor record anything')
  await stale.newer()
  t.equal((await waitForJob(app, jobId)).state, 'error', 'the newer attempt undid the resize')
  t.match(await drive(d.uuid), { status: 'unmounted', size: BigInt(GiB), lockedByJob: null })
})

t.test('drive_delete: a stale cleanup does not bring the drive back', async t => {
  const d = await ready(t)
  t.equal((await api.delete(`/api/2.0/drives/${d.uuid}/`)).statusCode, 204)
  const jobId = (await drive(d.uuid))!.lockedByJob!
  await cleanupOnly(jobId)
  const stale = await runStale(t, app, databaseUrl, jobId, 'drives')
  t.ok(stale.tookOver, 'the job was taken over while its cleanup waited')
  t.match(await drive(d.uuid), { deleted: true, lockedByJob: jobId }, 'the stale cleanup did not bring the drive back')
  t.match(await jobRow(app, jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'nor record anything')
  await stale.newer()
  t.equal((await waitForJob(app, jobId)).state, 'error', 'the newer attempt undid the delete')
  t.match(await drive(d.uuid), { deleted: false, status: 'unmounted', lockedByJob: null })
})

t.test('server_clone: a stale cleanup deletes neither the new server nor its drives (rows, images)', async t => {
  const jobId = newJobId()
  const serverId = randomUUID()
  const driveId = randomUUID()
  // a drive whose drive_clone child finished: unlocked, on the new server
  await app.prisma.$transaction(async (tx) => {
    await tx.server.create({ data: { id: serverId, ownerId: alice.id, name: 'clone', cpu: 1000, mem: BigInt(GiB), vncPassword: 'x', status: 'stopped', lockedByJob: jobId } })
    await tx.drive.create({ data: { id: driveId, ownerId: alice.id, name: 'disk', size: BigInt(GiB), media: 'disk', status: 'mounted', storageType: 'dssd' } })
    await tx.serverDrive.create({ data: { serverId, driveId, bootOrder: 1, devChannel: '0:0', device: 'virtio' } })
    await enqueueJob(tx, {
      id: jobId,
      ownerId: alice.id,
      operation: 'server_clone',
      params: { sourceServerId: randomUUID(), serverId, disks: [{ sourceId: randomUUID(), driveId, jobId: randomUUID() }] },
      resources: [{ type: 'servers', id: serverId }]
    })
  })
  await app.storage.create(driveId, GiB)
  await cleanupOnly(jobId)
  const stale = await runStale(t, app, databaseUrl, jobId, 'server_drives')
  t.ok(stale.tookOver, 'the job was taken over while its cleanup waited')
  t.match(await app.prisma.server.findUnique({ where: { id: serverId } }), { lockedByJob: jobId }, 'the stale cleanup did not delete the new server')
  t.ok(await drive(driveId), 'nor its drive\'s row')
  t.ok(await app.storage.exists(driveId), 'nor its image')
  t.match(await jobRow(app, jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'nor record anything')
  await stale.newer()
  t.equal((await waitForJob(app, jobId)).state, 'error', 'the newer attempt undid the server clone')
  t.equal(await app.prisma.server.findUnique({ where: { id: serverId } }), null)
  t.equal(await drive(driveId), null)
  t.notOk(await app.storage.exists(driveId))
})

t.test('drive_upload: a stale cleanup deletes neither the uploaded drive\'s row nor its image', async t => {
  const jobId = newJobId()
  const driveId = randomUUID()
  await app.prisma.$transaction(async (tx) => {
    await tx.drive.create({ data: { id: driveId, ownerId: alice.id, name: 'upload', size: BigInt(GiB), media: 'disk', status: 'uploading', storageType: 'dssd', lockedByJob: jobId } })
    await enqueueJob(tx, { id: jobId, ownerId: alice.id, operation: 'drive_upload', params: { driveId, mode: 'chunked', size: GiB }, resources: [{ type: 'drives', id: driveId }] })
  })
  await app.storage.create(driveId, GiB)
  await cleanupOnly(jobId)
  const stale = await runStale(t, app, databaseUrl, jobId, 'drives')
  t.ok(stale.tookOver, 'the job was taken over while its cleanup waited')
  t.match(await drive(driveId), { status: 'uploading', lockedByJob: jobId }, 'the stale cleanup did not delete the drive\'s row')
  t.ok(await app.storage.exists(driveId), 'nor its image')
  t.match(await jobRow(app, jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'nor record anything')
  await stale.newer()
  t.equal((await waitForJob(app, jobId)).state, 'error', 'the newer attempt undid the upload')
  t.equal(await drive(driveId), null)
  t.notOk(await app.storage.exists(driveId))
})

t.test('drive_download: a stale cleanup does not use up the download\'s link', async t => {
  const d = await ready(t)
  const jobId = newJobId()
  const tokenHash = `stale-${jobId}`
  await app.prisma.$transaction(async (tx) => {
    await enqueueJob(tx, { id: jobId, ownerId: alice.id, operation: 'drive_download', params: { driveId: d.uuid }, resources: [{ type: 'drives', id: d.uuid, mode: 'read' }] })
    await tx.transferLink.create({ data: { tokenHash, ownerId: alice.id, driveId: d.uuid, jobId, purpose: 'download', expiresAt: new Date(Date.now() + 3_600_000) } })
  })
  await cleanupOnly(jobId)
  const stale = await runStale(t, app, databaseUrl, jobId, 'transfer_links')
  t.ok(stale.tookOver, 'the job was taken over while its cleanup waited')
  t.match(await app.prisma.transferLink.findUnique({ where: { tokenHash } }), { usedAt: null }, 'the stale cleanup did not use up the link')
  t.match(await jobRow(app, jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'nor record anything')
  await stale.newer()
  t.equal((await waitForJob(app, jobId)).state, 'error', 'the newer attempt undid the download')
  t.not((await app.prisma.transferLink.findUniqueOrThrow({ where: { tokenHash } })).usedAt, null)
})

t.test('drive_upload into a drive: a stale cleanup neither gives the drive back nor removes the scratch image', async t => {
  const d = await ready(t)
  const jobId = newJobId()
  const scratch = randomUUID()
  await app.prisma.$transaction(async (tx) => {
    await tx.drive.update({ where: { id: d.uuid }, data: { status: 'uploading', lockedByJob: jobId } })
    await enqueueJob(tx, { id: jobId, ownerId: alice.id, operation: 'drive_upload', params: { driveId: d.uuid, mode: 'multipart_into', scratch }, resources: [{ type: 'drives', id: d.uuid }] })
  })
  await app.storage.create(scratch, GiB)
  await cleanupOnly(jobId)
  const stale = await runStale(t, app, databaseUrl, jobId, 'drives')
  t.ok(stale.tookOver, 'the job was taken over while its cleanup waited')
  t.match(await drive(d.uuid), { status: 'uploading', lockedByJob: jobId }, 'the stale cleanup did not give the drive back')
  t.ok(await app.storage.exists(scratch), 'nor remove the scratch image (the newer attempt may roll it forward)')
  t.match(await jobRow(app, jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'nor record anything')
  await stale.newer()
  t.equal((await waitForJob(app, jobId)).state, 'error', 'the newer attempt undid the upload')
  t.match(await drive(d.uuid), { status: 'unmounted', lockedByJob: null })
  t.ok(await app.storage.exists(d.uuid), 'the drive keeps its image')
  t.notOk(await app.storage.exists(scratch))
})
