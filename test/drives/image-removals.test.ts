// Images whose drive rows are gone (here: drive_create and drive_clone cleanups) are recorded for
// removal in the transaction that deleted the rows, and removed by the sweeper when the cleanup's
// own delete failed or never ran (a process that died between the commit and the delete). An
// image whose drive row exists is never removed. Real PostgreSQL and real sparse files; the one
// fault (a delete that fails once) is a Proxy over the real storage.
import t, { type Test } from 'tap'
import crypto from 'node:crypto'
import pg from 'pg'
import { StorageError, type DriveStorage } from '../../src/storage/index.ts'
import { driveCreateHandler } from '../../src/features/drives/handlers/drive-create.ts'
import { driveJobParams } from '../../src/features/drives/handlers/drive-params.ts'
import { driveCloneHandler, driveCloneParams } from '../../src/features/clones/handlers/drive-clone.ts'
import { recordImageRemovals, removeRecordedImages, REMOVALS_AT_ONCE, sweepImageRemovals } from '../../src/features/drives/image-removals.ts'
import { JobFailure } from '../../src/engine/types.ts'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { appHandlers, startEngine, waitForJob } from '../helpers/jobs.ts'
import { GiB, readyDrive } from './helpers.ts'
import { heldMethod } from '../helpers/gate.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false, config: { storage: 'local' } })
const alice = await createUser(app)
const api = client(app, alice)

const record = (id: string) => app.prisma.imageRemoval.findUnique({ where: { imageId: id } })
const row = (id: string) => app.prisma.drive.findUnique({ where: { id } })
/** Makes every record due now (their backoff is tens of seconds). */
const due = () => app.prisma.$executeRaw`UPDATE image_removals SET next_try_at = now() - interval '1 second'`

/** The real storage, whose next `delete` fails with a non-retryable I/O error (once). */
function failingDeleteOnce (): { storage: DriveStorage, failed: () => number } {
  let failures = 0
  const storage = new Proxy(app.storage, {
    get (target, p) {
      if (p === 'delete') {
        return async (id: string) => {
          if (failures === 0) { failures++; throw new StorageError('IO', `injected EIO deleting ${id}`) }
          return target.delete(id)
        }
      }
      const v = Reflect.get(target, p, target) as unknown
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
    }
  })
  return { storage, failed: () => failures }
}

/** A drive whose image is made; the drive_create job then fails, and its real cleanup runs. */
async function failedCreate (t: Test, storage: DriveStorage): Promise<{ uuid: string, jobId: string }> {
  const real = driveCreateHandler(storage, app.dbPool)
  const handlers = {
    drive_create: {
      ...real,
      async run (ctx: Parameters<typeof real.run>[0]) {
        const { driveId, size } = driveJobParams(ctx, true)
        await app.storage.create(driveId, size)
        throw new JobFailure('injected after the image was made')
      }
    }
  }
  const engine = await startEngine(t, app, handlers, { databaseUrl })
  const d = (await api.post('/api/2.0/drives/', { name: 'doomed', size: GiB, media: 'disk' })).json().objects[0]
  const jobId = d.jobs[0].uuid as string
  t.equal((await waitForJob(app, jobId)).state, 'error', 'the job failed')
  await engine.stop()
  return { uuid: d.uuid, jobId }
}

t.test('a cleanup whose image delete fails leaves a record; the sweeper removes the image later', async t => {
  const fault = failingDeleteOnce()
  const d = await failedCreate(t, fault.storage)
  t.equal(fault.failed(), 1, 'the cleanup\'s delete failed')
  t.equal(await row(d.uuid), null, 'the drive row is gone')
  t.ok(await app.storage.exists(d.uuid), 'its image is still there')
  t.match(await record(d.uuid), { reason: 'drive_create cleanup', attempts: 1, lastError: /injected EIO/ }, 'and recorded for removal')
  t.same(await app.sweepImageRemovals(), { removed: 0, owned: 0, failed: 0 }, 'not due before its backoff')
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /clonejobs_image_removals\{state="backoff"\} 1/, '/metrics shows it waiting')
  await due()
  t.same(await app.sweepImageRemovals(), { removed: 1, owned: 0, failed: 0 }, 'the sweeper removed it')
  t.notOk(await app.storage.exists(d.uuid), 'the image is gone')
  t.equal(await record(d.uuid), null, 'and so is its record')
})

t.test('drive_clone: a cleanup whose delete of the destination\'s image fails leaves a record; the sweeper removes it', async t => {
  const setup = await startEngine(t, app, appHandlers(app), { databaseUrl })
  const src = await readyDrive(api, { size: GiB })
  await setup.stop()
  const fault = failingDeleteOnce()
  const real = driveCloneHandler(() => fault.storage)
  const engine = await startEngine(t, app, {
    drive_clone: {
      ...real,
      async run (ctx: Parameters<typeof real.run>[0]) {
        const p = driveCloneParams(ctx)
        await app.storage.copy(p.sourceId, p.driveId)
        throw new JobFailure('injected after the copy')
      }
    }
  }, { databaseUrl })
  const res = await api.post(`/api/2.0/drives/${src.uuid}/action/?do=clone`, {})
  t.equal(res.statusCode, 202)
  const dst = res.json().objects[0]
  t.equal((await waitForJob(app, dst.jobs[0].uuid as string)).state, 'error', 'the clone failed')
  await engine.stop()
  t.equal(fault.failed(), 1, 'the cleanup\'s delete failed')
  t.equal(await row(dst.uuid), null, 'the destination\'s row is gone')
  t.ok(await app.storage.exists(dst.uuid), 'its image is still there')
  t.match(await record(dst.uuid), { reason: 'drive_clone cleanup', attempts: 1 }, 'and recorded for removal')
  await due()
  t.same(await app.sweepImageRemovals(), { removed: 1, owned: 0, failed: 0 })
  t.notOk(await app.storage.exists(dst.uuid), 'the sweeper removed it')
  t.ok(await app.storage.exists(src.uuid), 'the source\'s image stays')
})

t.test('a cleanup whose delete succeeds leaves no record', async t => {
  const d = await failedCreate(t, app.storage)
  t.equal(await row(d.uuid), null)
  t.notOk(await app.storage.exists(d.uuid), 'the image went at once')
  t.equal(await record(d.uuid), null, 'and its record with it')
})

t.test('a sweeper whose delete fails keeps the record and backs off', async t => {
  const fault = failingDeleteOnce()
  const setup = await startEngine(t, app, appHandlers(app), { databaseUrl })
  const made = await readyDrive(api, { size: GiB })
  await setup.stop()
  await app.prisma.$transaction(async (tx) => {
    await tx.drive.delete({ where: { id: made.uuid } })
    await recordImageRemovals(tx, [made.uuid], 'test')
  })
  const deps = { prisma: app.prisma, storage: fault.storage, log: app.log }
  t.same(await sweepImageRemovals(deps), { removed: 0, owned: 0, failed: 1 })
  const r = await record(made.uuid)
  t.match(r, { attempts: 1, lastError: /injected EIO/ })
  t.ok(r!.nextTryAt.getTime() > Date.now() + 5000, 'the next try waits')
  t.ok(await app.storage.exists(made.uuid))
  await due()
  t.same(await sweepImageRemovals(deps), { removed: 1, owned: 0, failed: 0 })
  t.notOk(await app.storage.exists(made.uuid))
})

t.test('the sweeper never removes an image whose drive row exists', async t => {
  const setup = await startEngine(t, app, appHandlers(app), { databaseUrl })
  const d = await readyDrive(api, { size: GiB })
  await setup.stop()
  // a record for an owned image (written when the row was briefly gone, the id since made again)
  await app.prisma.$executeRaw`INSERT INTO image_removals (image_id, reason) VALUES (${d.uuid}::uuid, 'test')`
  t.same(await app.sweepImageRemovals(), { removed: 0, owned: 1, failed: 0 }, 'the record was dropped')
  t.ok(await app.storage.exists(d.uuid), 'the image stays')
  t.equal(await record(d.uuid), null)

  t.test('recording an owned image records nothing', async t => {
    await app.prisma.$transaction(async (tx) => { await recordImageRemovals(tx, [d.uuid], 'test') })
    t.equal(await record(d.uuid), null)
  })

  t.test('a drive row made with a recorded id takes the record', async t => {
    const id = (await api.post('/api/2.0/drives/', { name: 'again', size: GiB, media: 'disk' })).json().objects[0].uuid as string
    await app.prisma.$transaction(async (tx) => {
      await tx.drive.delete({ where: { id } })
      await recordImageRemovals(tx, [id], 'test')
    })
    t.ok(await record(id), 'recorded')
    await app.prisma.$executeRaw`
      INSERT INTO drives (id, owner_id, name, size, media, status, storage_type)
      VALUES (${id}::uuid, ${alice.id}::uuid, 'again', ${GiB}, 'disk', 'creating', 'dssd')`
    await app.storage.create(id, GiB)
    t.equal(await record(id), null, 'the insert took the record')
    t.same(await app.sweepImageRemovals(), { removed: 0, owned: 0, failed: 0 })
    t.ok(await app.storage.exists(id), 'the image stays')
  })

  t.test('an insert of the id not yet committed: the sweeper skips the record', async t => {
    const id = (await api.post('/api/2.0/drives/', { name: 'racing', size: GiB, media: 'disk' })).json().objects[0].uuid as string
    await app.storage.create(id, GiB)
    await app.prisma.$transaction(async (tx) => {
      await tx.drive.delete({ where: { id } })
      await recordImageRemovals(tx, [id], 'test')
    })
    const other = new pg.Client({ connectionString: databaseUrl })
    await other.connect()
    t.teardown(() => other.end())
    await other.query('BEGIN')
    await other.query(`INSERT INTO drives (id, owner_id, name, size, media, status, storage_type)
      VALUES ($1::uuid, $2::uuid, 'racing', $3, 'disk', 'creating', 'dssd')`, [id, alice.id, GiB])
    t.same(await app.sweepImageRemovals(), { removed: 0, owned: 0, failed: 0 }, 'skipped: the insert holds the record')
    t.ok(await app.storage.exists(id), 'the image stays')
    await other.query('COMMIT')
    t.equal(await record(id), null, 'the committed insert took the record')
    t.ok(await row(id))
  })

  t.test('a removal under way: an insert of the id waits until the image is gone', async t => {
    const id = (await api.post('/api/2.0/drives/', { name: 'waiting', size: GiB, media: 'disk' })).json().objects[0].uuid as string
    await app.storage.create(id, GiB)
    await app.prisma.$transaction(async (tx) => {
      await tx.drive.delete({ where: { id } })
      await recordImageRemovals(tx, [id], 'test')
    })
    let atDelete!: () => void
    const reached = new Promise<void>(resolve => { atDelete = resolve })
    let open!: () => void
    const gate = new Promise<void>(resolve => { open = resolve })
    const storage = new Proxy(app.storage, {
      get (target, p) {
        if (p === 'delete') return async (image: string) => { atDelete(); await gate; return target.delete(image) }
        const v = Reflect.get(target, p, target) as unknown
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
      }
    })
    const sweeping = sweepImageRemovals({ prisma: app.prisma, storage, log: app.log })
    await reached
    const other = new pg.Client({ connectionString: databaseUrl })
    await other.connect()
    t.teardown(() => other.end())
    let inserted = false
    const inserting = other.query(`INSERT INTO drives (id, owner_id, name, size, media, status, storage_type)
      VALUES ($1::uuid, $2::uuid, 'waiting', $3, 'disk', 'creating', 'dssd')`, [id, alice.id, GiB]).then(() => { inserted = true })
    // the insert's backend waits for a lock (by its pid: pg_stat_activity's text may lag)
    const pid = (other as unknown as { processID: number }).processID
    await eventually(async () => (await app.prisma.$queryRaw<unknown[]>`SELECT 1 FROM pg_locks WHERE NOT granted AND pid = ${pid}::int`).length > 0 || undefined)
    t.notOk(inserted, 'the insert waits for the removal')
    open()
    t.same(await sweeping, { removed: 1, owned: 0, failed: 0 })
    await inserting
    t.ok(await row(id), 'the drive row is made after the removal committed')
    t.equal(await record(id), null)
    // the new row's own image is made after its row, so after the removal
    await app.storage.create(id, GiB)
    t.same(await app.sweepImageRemovals(), { removed: 0, owned: 0, failed: 0 })
    t.ok(await app.storage.exists(id), 'the new image stays')
  })
})

t.test('a record survives a process that died between its commit and the delete; a sweeper started later removes the image', async t => {
  const setup = await startEngine(t, app, appHandlers(app), { databaseUrl })
  const d = await readyDrive(api, { size: GiB })
  await setup.stop()
  // what a cleanup commits (the row deleted, the image recorded) and then no delete: the process died
  await app.prisma.$transaction(async (tx) => {
    await tx.drive.delete({ where: { id: d.uuid } })
    await recordImageRemovals(tx, [d.uuid], 'drive_create cleanup')
  })
  t.ok(await app.storage.exists(d.uuid))
  // another process on the same database and storage, with its sweeper running every second
  const { app: next } = await buildTestApp(t, { databaseUrl, config: { storage: 'local', drivesDir: app.config.drivesDir, imageSweepSeconds: 1 } })
  await next.ready()
  // the record goes in the transaction that held it while the image was deleted
  await eventually(async () => (await record(d.uuid)) === null || undefined, { timeoutMs: 15_000 })
  t.notOk(await app.storage.exists(d.uuid), 'the sweeper removed the image, and its record with it')
})

t.test("an upload's image is recorded before it is made; its drive row's commit takes the record", async t => {
  const { createUploadImage, removeImage, transferDeps } = await import('../../src/features/transfers/service.ts')
  const deps = transferDeps(app)
  // a whole upload: nothing left to remove, the image is the drive's
  const up = await app.inject({ method: 'POST', url: '/api/2.0/drives/upload/kept', headers: { authorization: alice.authorization, 'content-type': 'application/octet-stream' }, payload: Buffer.alloc(4096, 7) })
  t.equal(up.statusCode, 201)
  t.equal(await record(up.body), null, 'the row took its record')
  t.ok(await app.storage.exists(up.body))
  await due()
  await app.sweepImageRemovals()
  t.ok(await app.storage.exists(up.body), 'a sweep leaves the uploaded image')

  // the process dies between the image and its row's commit: the record outlives it
  const lost = crypto.randomUUID()
  await createUploadImage(deps, lost, 4096)
  t.ok(await app.storage.exists(lost), 'the image is made')
  const r = await record(lost)
  t.ok(r && r.nextTryAt.getTime() > Date.now() + 10 * 60_000, 'recorded, due only after the grace for its row to commit')
  await app.sweepImageRemovals()
  t.ok(await app.storage.exists(lost), 'not removed during the grace')
  await due()
  t.match(await app.sweepImageRemovals(), { removed: 1 })
  t.notOk(await app.storage.exists(lost), 'removed once due: nothing is left behind')
  t.equal(await record(lost), null)

  // the row's transaction fails: the image goes at once, with its record
  const failed = crypto.randomUUID()
  await createUploadImage(deps, failed, 4096)
  await removeImage(deps, failed)
  t.notOk(await app.storage.exists(failed))
  t.equal(await record(failed), null)
})

t.test('removals whose storage is slow hold at most REMOVALS_AT_ONCE of the pool\'s connections', async t => {
  const ids = Array.from({ length: 6 }, () => crypto.randomUUID())
  for (const id of ids) await app.storage.create(id, GiB)
  await app.prisma.$transaction(async (tx) => { await recordImageRemovals(tx, ids, 'test') })
  // a delete that waits (rbd waiting out a dead client's watch on the image), on the real storage
  const held = heldMethod(app.storage, 'delete')
  const storage = held.proxy
  // six cleanups at once (a host's uploads taken over together), and the sweeper beside them
  const cleanups = ids.map(id => removeRecordedImages({ prisma: app.prisma, storage, log: app.log }, [id]))
  const sweeping = sweepImageRemovals({ prisma: app.prisma, storage, log: app.log })
  await eventually(async () => held.calls() >= REMOVALS_AT_ONCE || undefined)
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal(held.calls(), REMOVALS_AT_ONCE, `${REMOVALS_AT_ONCE} deletes under way, the others waiting`)
  const busy = app.dbPool.totalCount - app.dbPool.idleCount
  t.ok(busy <= REMOVALS_AT_ONCE, `the pool lends ${busy} connections (at most ${REMOVALS_AT_ONCE})`)
  const list = await api.get('/api/2.0/drives/')
  t.equal(list.statusCode, 200, 'requests are served meanwhile')
  held.release()
  await Promise.all(cleanups)
  // the sweep runs last and may take a record before the cleanup that waited for it (SKIP LOCKED)
  const swept = await sweeping
  t.equal(swept.failed + swept.owned, 0, `the sweep failed nothing (it removed ${swept.removed})`)
  for (const id of ids) {
    t.notOk(await app.storage.exists(id), `image ${id.slice(0, 8)} removed`)
    t.equal(await record(id), null)
  }
})
