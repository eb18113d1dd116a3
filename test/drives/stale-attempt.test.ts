// A stale attempt of drive_create, drive_resize or drive_delete (its job was taken over by a newer
// attempt while it was held up) commits nothing: no drive status, size or row, no resize or delete
// of the image, no outcome; the newer attempt then does the job (test/helpers/takeover.ts). An image
// a stale drive_create made is removed only once the drive is gone. An attempt held up inside its
// storage call past its lease neither truncates nor removes the image (the storage's guard,
// asked right before the step).
import t, { type Test } from 'tap'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { appHandlers, startEngine, waitForJob } from '../helpers/jobs.ts'
import { jobRow, runStale, TAKEN_BY, takeOver } from '../helpers/takeover.ts'
import { WAITING_ON } from '../helpers/locks.ts'
import { eventually } from '../helpers/app.ts'
import pg from 'pg'
import { GiB, readyDrive } from './helpers.ts'
import { memoryLogger } from '../helpers/log.ts'
import { heldMethod } from '../helpers/gate.ts'
import { readAll } from '../storage/contract.ts'
import { driveCreateHandler } from '../../src/features/drives/handlers/drive-create.ts'
import { driveDeleteHandler } from '../../src/features/drives/handlers/drive-delete.ts'
import { driveResizeHandler } from '../../src/features/drives/handlers/drive-resize.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const api = client(app, alice)

/** A drive made by a worker that is gone again, so the next job stays queued. */
async function drive (t: Parameters<typeof startEngine>[0]): Promise<{ uuid: string }> {
  const setup = await startEngine(t, app, appHandlers(app), { databaseUrl })
  const d = await readyDrive(api, { size: GiB })
  await setup.stop()
  return d
}
const row = (id: string) => app.prisma.drive.findUnique({ where: { id } })

t.test('drive_create: a stale attempt does not finish the drive; the newer one does', async t => {
  const res = await api.post('/api/2.0/drives/', { name: 'disk', size: GiB, media: 'disk' })
  const d = res.json().objects[0]
  const jobId = d.jobs[0].uuid as string
  const stale = await runStale(t, app, databaseUrl, jobId, 'drives')
  t.ok(stale.tookOver, 'the job was taken over while its attempt waited')
  t.match(await row(d.uuid), { status: 'creating', lockedByJob: jobId }, 'the stale attempt did not finish the drive')
  t.notOk(await app.storage.exists(d.uuid), 'nor make its image (checked its fence before the storage step)')
  t.match(await jobRow(app, jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'nor the job')
  await stale.newer()
  const done = await waitForJob(app, jobId)
  t.equal(done.state, 'success', 'the newer attempt finished it')
  t.match(await row(d.uuid), { status: 'unmounted', lockedByJob: null })
})

t.test('drive_resize: a stale attempt resizes neither the image nor the drive; the newer one does', async t => {
  const d = await drive(t)
  const res = await api.post(`/api/2.0/drives/${d.uuid}/action/?do=resize`, { size: 2 * GiB })
  t.equal(res.statusCode, 202)
  const jobId = (await row(d.uuid))!.lockedByJob!
  const stale = await runStale(t, app, databaseUrl, jobId, 'drives')
  t.ok(stale.tookOver, 'the job was taken over while its attempt waited')
  t.match(await row(d.uuid), { status: 'resizing', size: BigInt(GiB), lockedByJob: jobId }, 'the stale attempt did not settle the drive')
  t.equal((await app.storage.stat(d.uuid)).size, GiB, 'nor resize its image')
  t.match(await jobRow(app, jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'nor finish the job')
  await stale.newer()
  t.equal((await waitForJob(app, jobId)).state, 'success', 'the newer attempt resized it')
  t.match(await row(d.uuid), { status: 'unmounted', size: BigInt(2 * GiB), lockedByJob: null })
  t.equal((await app.storage.stat(d.uuid)).size, 2 * GiB)
})

t.test('drive_delete: a stale attempt deletes neither the image nor the row; the newer one does', async t => {
  const d = await drive(t)
  t.equal((await api.delete(`/api/2.0/drives/${d.uuid}/`)).statusCode, 204)
  const jobId = (await row(d.uuid))!.lockedByJob!
  const stale = await runStale(t, app, databaseUrl, jobId, 'drives')
  t.ok(stale.tookOver, 'the job was taken over while its attempt waited')
  t.match(await row(d.uuid), { deleted: true, lockedByJob: jobId }, 'the stale attempt did not delete the row')
  t.ok(await app.storage.exists(d.uuid), 'nor the image (a newer attempt may be bringing the drive back)')
  t.match(await jobRow(app, jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'nor finish the job')
  await stale.newer()
  t.equal((await waitForJob(app, jobId)).state, 'success', 'the newer attempt deleted it')
  t.equal(await row(d.uuid), null)
  t.notOk(await app.storage.exists(d.uuid))
})

/**
 * Runs drive_create's job until its attempt has passed its fence and made the image, and holds it
 * there (before its FINISH, on a locked `events`: a process frozen between its fence and its end)
 * while the job is taken over and `meanwhile` runs; then lets it end.
 */
async function frozenAfterFence (t: Parameters<typeof startEngine>[0], jobId: string, driveId: string, meanwhile: (c: pg.Client) => Promise<void>): Promise<{ tookOver: boolean, other: pg.Client }> {
  const connect = async () => {
    const c = new pg.Client({ connectionString: databaseUrl })
    await c.connect()
    t.teardown(() => c.end().catch(() => {}))
    return c
  }
  const [drives, events, other] = [await connect(), await connect(), await connect()]
  // first held on `drives` (its first statement), so that `events` is locked after the claim
  await drives.query('BEGIN')
  await drives.query('LOCK TABLE drives IN ACCESS EXCLUSIVE MODE')
  const engine = await startEngine(t, app, appHandlers(app), { databaseUrl, leaseSeconds: 60, heartbeatMs: 60_000 })
  await eventually(async () => (await other.query(WAITING_ON, ['drives'])).rowCount! > 0)
  await events.query('BEGIN')
  await events.query('LOCK TABLE events IN ACCESS EXCLUSIVE MODE')
  await drives.query('COMMIT')
  await eventually(() => app.storage.exists(driveId))
  const tookOver = await takeOver(other, jobId)
  await meanwhile(other)
  await events.query('COMMIT')
  await engine.idle()
  return { tookOver, other }
}

t.test('drive_create: an image made by an attempt taken over after its fence is removed once the newer attempt has removed the drive', async t => {
  const d = (await api.post('/api/2.0/drives/', { name: 'disk', size: GiB, media: 'disk' })).json().objects[0]
  const jobId = d.jobs[0].uuid as string
  // the newer attempt failed and removed the drive meanwhile (its image was not there yet to remove)
  const stale = await frozenAfterFence(t, jobId, d.uuid, async (c) => { await c.query('DELETE FROM drives WHERE id = $1::uuid', [d.uuid]) })
  t.ok(stale.tookOver, 'the job was taken over after the fence')
  t.notOk(await app.storage.exists(d.uuid), 'the stale attempt removed the image it made: no orphan')
  t.match(await jobRow(app, jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'and recorded nothing')
})

t.test('drive_create: an image made by an attempt taken over after its fence stays while the drive exists', async t => {
  const d = (await api.post('/api/2.0/drives/', { name: 'disk', size: GiB, media: 'disk' })).json().objects[0]
  const jobId = d.jobs[0].uuid as string
  const stale = await frozenAfterFence(t, jobId, d.uuid, async () => {})
  t.ok(stale.tookOver, 'the job was taken over after the fence')
  t.ok(await app.storage.exists(d.uuid), 'the image stays: the drive (and the newer attempt) still has it')
  t.match(await row(d.uuid), { status: 'creating', lockedByJob: jobId })
  await stale.other.query('UPDATE jobs SET locked_until = now() - interval \'1 second\' WHERE id = $1::uuid', [jobId])
  t.equal((await waitForJob(app, jobId)).state, 'success', 'the newer attempt finished the drive')
  t.match(await row(d.uuid), { status: 'unmounted', lockedByJob: null })
})

t.test('drive_create: an image made by an attempt whose heartbeat found it taken over is removed once the drive is gone', async t => {
  const d = (await api.post('/api/2.0/drives/', { name: 'disk', size: GiB, media: 'disk' })).json().objects[0]
  const jobId = d.jobs[0].uuid as string
  // the real storage, whose create waits at a gate (the process held up while it makes the image)
  const held = heldMethod(app.storage, 'create')
  const { log, lines } = memoryLogger()
  const engine = await startEngine(t, { ...app, log } as typeof app, { ...appHandlers(app), drive_create: driveCreateHandler(held.proxy, app.dbPool) }, { databaseUrl, heartbeatMs: 50 })
  await held.reached
  const other = new pg.Client({ connectionString: databaseUrl })
  await other.connect()
  t.teardown(() => other.end())
  t.ok(await takeOver(other, jobId), 'the job was taken over after the fence')
  // the newer attempt failed and removed the drive meanwhile (its image was not there yet to remove)
  await other.query('DELETE FROM drives WHERE id = $1::uuid', [d.uuid])
  // the next heartbeat finds the lease gone and aborts the attempt (LeaseLost), still in its create
  await eventually(async () => lines.some(l => /job aborted: lease lost/.test(l.msg)) || undefined)
  held.release()
  await engine.idle()
  t.notOk(await app.storage.exists(d.uuid), 'the stale attempt removed the image it made: no orphan')
  t.equal(await app.prisma.imageRemoval.findUnique({ where: { imageId: d.uuid } }), null, 'and left no removal record')
  t.match(await jobRow(app, jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'and recorded nothing')
})

/**
 * Runs the queued job `jobId` in an engine of its own whose drive handlers (create, resize, delete)
 * get the real storage with `method` held at a gate: the attempt has passed its fence and is inside
 * the storage call. No heartbeat renews its lease (a process held up there), so the lease runs out;
 * the job is taken over, `meanwhile` does what may come after (the newer attempt's work, later
 * requests), and then the held attempt goes on. Its watchdog's timer has marked it stale by then
 * (the event loop ran meanwhile); a thread held up so that no timer runs, refused by the clock
 * alone, is test/jobs/fencing.test.ts's case.
 */
async function heldInStorage (t: Parameters<typeof startEngine>[0], jobId: string, method: 'resize' | 'delete', meanwhile: (c: pg.Client) => Promise<void>): Promise<boolean> {
  const held = heldMethod(app.storage, method)
  const { log, lines } = memoryLogger()
  const handlers = { ...appHandlers(app), drive_create: driveCreateHandler(held.proxy, app.dbPool), drive_resize: driveResizeHandler(held.proxy), drive_delete: driveDeleteHandler(held.proxy) }
  const engine = await startEngine(t, { ...app, log } as typeof app, handlers, { databaseUrl, leaseSeconds: 2, heartbeatMs: 60_000 })
  await held.reached
  await eventually(async () => lines.some(l => /job aborted: lease could not be renewed in time/.test(l.msg)) || undefined)
  const other = new pg.Client({ connectionString: databaseUrl })
  await other.connect()
  t.teardown(() => other.end())
  const tookOver = await takeOver(other, jobId)
  await meanwhile(other)
  held.release()
  await engine.idle()
  return tookOver
}

/**
 * Holds the queued job `jobId`'s attempt in its storage resize past its lease (heldInStorage) while
 * the newer attempt finishes the drive, a later resize grows it to 3 GiB and its guest writes past
 * 2 GiB; then checks the held attempt cut nothing, settled nothing and recorded nothing.
 */
async function heldResizeCutsNothing (t: Test, jobId: string, driveId: string): Promise<void> {
  const marker = Buffer.from('written past 2 GiB after the drive grew to 3 GiB')
  const tookOver = await heldInStorage(t, jobId, 'resize', async (c) => {
    await app.storage.resize(driveId, 3 * GiB)
    await c.query('UPDATE drives SET size = $2, locked_by_job = NULL, status = \'unmounted\' WHERE id = $1::uuid', [driveId, 3 * GiB])
    const w = await app.storage.openForWrite(driveId)
    await w.write(marker, 2.5 * GiB)
    await w.close()
  })
  t.ok(tookOver, 'the job was taken over while its attempt was held up in the storage call')
  t.equal((await app.storage.stat(driveId)).size, 3 * GiB, 'the held attempt did not truncate the image')
  const back = await readAll(app.storage, driveId, 2.5 * GiB, 2.5 * GiB + marker.length - 1)
  t.equal(back.toString(), marker.toString(), 'what was written past 2 GiB is still there')
  t.match(await row(driveId), { size: BigInt(3 * GiB), status: 'unmounted', lockedByJob: null }, 'nor settled the drive')
  t.match(await jobRow(app, jobId), { state: 'started', lockedBy: TAKEN_BY, finishedAt: null }, 'nor recorded anything')
}

t.test('drive_resize: an attempt held up in its resize past its lease does not cut a drive grown since', async t => {
  const d = await drive(t)
  t.equal((await api.post(`/api/2.0/drives/${d.uuid}/action/?do=resize`, { size: 2 * GiB })).statusCode, 202)
  await heldResizeCutsNothing(t, (await row(d.uuid))!.lockedByJob!, d.uuid)
})

t.test('drive_create: an attempt held up resizing the image an earlier attempt made does not cut a drive grown since', async t => {
  const d = (await api.post('/api/2.0/drives/', { name: 'disk', size: GiB, media: 'disk' })).json().objects[0]
  // an earlier attempt made the image, then its process died: this attempt finds it and resizes it
  await app.storage.create(d.uuid, GiB)
  await heldResizeCutsNothing(t, d.jobs[0].uuid as string, d.uuid)
})

t.test('drive_delete: an attempt held up in its delete past its lease does not remove a drive brought back since', async t => {
  const d = await drive(t)
  t.equal((await api.delete(`/api/2.0/drives/${d.uuid}/`)).statusCode, 204)
  const jobId = (await row(d.uuid))!.lockedByJob!
  const tookOver = await heldInStorage(t, jobId, 'delete', async (c) => {
    // the newer attempt failed with the image intact, and its cleanup brought the drive back
    await c.query('UPDATE drives SET deleted = false, locked_by_job = NULL, status = \'unmounted\' WHERE id = $1::uuid', [d.uuid])
  })
  t.ok(tookOver, 'the job was taken over while its attempt was held up in the storage call')
  t.ok(await app.storage.exists(d.uuid), 'the held attempt did not remove the image')
  t.match(await row(d.uuid), { deleted: false, status: 'unmounted', lockedByJob: null }, 'nor the row')
  t.equal((await api.get(`/api/2.0/drives/${d.uuid}/`)).statusCode, 200, 'the drive is there to its owner')
  t.match(await jobRow(app, jobId), { state: 'started', lockedBy: TAKEN_BY, finishedAt: null }, 'nor recorded anything')
})
