// A stale attempt of drive_create, drive_resize or drive_delete (its job was taken over by a newer
// attempt while it was held up) commits nothing: no drive status, size or row, no resize or delete
// of the image, no outcome; the newer attempt then does the job (test/helpers/takeover.ts). An image
// a stale drive_create made is removed only once the drive is gone.
import t from 'tap'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { appHandlers, startEngine, waitForJob } from '../helpers/jobs.ts'
import { jobRow, runStale, TAKEN_BY, takeOver } from '../helpers/takeover.ts'
import { WAITING_ON } from '../helpers/locks.ts'
import { eventually } from '../helpers/app.ts'
import pg from 'pg'
import { GiB, readyDrive } from './helpers.ts'
import { memoryLogger } from '../helpers/log.ts'
import { heldMethod } from '../helpers/gate.ts'
import { driveCreateHandler } from '../../src/features/drives/handlers/drive-create.ts'

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
