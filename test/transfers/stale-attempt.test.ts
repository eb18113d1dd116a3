// A stale attempt of drive_upload (a chunked upload finished by a worker: its job was taken over
// by a newer attempt while it was held up) does not finish the drive; the newer one does
// (test/helpers/takeover.ts). A request-held upload into a drive taken over after its commit point
// does not copy its file over the drive's image (the rename is fenced by its attempt).
import t from 'tap'
import { Readable } from 'node:stream'
import { buffer } from 'node:stream/consumers'
import pg from 'pg'
import { JobEngine } from '../../src/engine/engine.ts'
import { transferDeps } from '../../src/features/transfers/service.ts'
import { startMultipartUploadInto } from '../../src/features/transfers/upload-into.ts'
import type { DriveStorage } from '../../src/storage/index.ts'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { appHandlers, startEngine, waitForJob } from '../helpers/jobs.ts'
import { jobRow, runStale, TAKEN_BY, takeOver } from '../helpers/takeover.ts'
import { MiB, randomImage, sha256 } from './helpers.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false, config: { storage: 'local' } })
const alice = await createUser(app)
const api = client(app, alice)

const link = async (uuid: string, n: number) => (await api.post(`/api/2.0/drives/${uuid}/action/?do=upload_chunk`, { chunk_number: n, chunk_size: MiB })).json().link as string
const imageOf = async (id: string) => buffer(await app.storage.createReadStream(id))
const put = (url: string, payload: Buffer) => app.inject({ method: 'POST', url, headers: { 'content-type': 'application/octet-stream', accept: 'application/json' }, payload })

t.test('drive_upload (chunked, finished by a worker): a stale attempt does not finish the drive; the newer one does', async t => {
  const data = randomImage(2 * MiB + 7)
  const d = (await api.post('/api/2.0/initupload/', { name: 'chunked', size: data.length, media: 'disk' })).json().objects[0]
  const jobId = d.jobs[0].uuid as string
  // the last chunk through another process (which alone cannot know the image's sha256): the
  // job is left to a worker, which hashes the image
  const { app: other } = await buildTestApp(t, { runWorkers: false, databaseUrl, config: { storage: 'local', drivesDir: app.config.drivesDir } })
  t.equal((await other.inject({ method: 'POST', url: await link(d.uuid, 1), headers: { 'content-type': 'application/octet-stream', accept: 'application/json' }, payload: data.subarray(MiB) })).statusCode, 200)
  t.match((await put(await link(d.uuid, 0), data.subarray(0, MiB))).json(), { complete: true })
  const stale = await runStale(t, app, databaseUrl, jobId, 'drives')
  t.ok(stale.tookOver, 'the job was taken over while its attempt waited')
  t.match(await app.prisma.drive.findUnique({ where: { id: d.uuid } }), { status: 'uploading', lockedByJob: jobId }, 'the stale attempt did not finish the drive')
  t.equal(await app.prisma.uploadChunk.count({ where: { driveId: d.uuid } }), 2, 'nor drop its chunks')
  t.match(await jobRow(app, jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'nor finish the job')
  await stale.newer()
  const done = await waitForJob(app, jobId)
  t.equal(done.state, 'success', 'the newer attempt finished it')
  t.match(await app.prisma.drive.findUnique({ where: { id: d.uuid } }), { status: 'unmounted', lockedByJob: null })
})

t.test('upload into a drive: a stale attempt does not copy its file over the drive\'s image; the newer one rolls it forward', async t => {
  const setup = await startEngine(t, app, appHandlers(app), { databaseUrl })
  const d = (await api.post('/api/2.0/drives/', { name: 'precious', size: MiB, media: 'disk' })).json().objects[0]
  await eventually(async () => (await app.prisma.drive.findUnique({ where: { id: d.uuid } }))?.status === 'unmounted' || undefined)
  await setup.stop()
  const before = await imageOf(d.uuid)
  // the holding "process" freezes after its commit point, before its copy (a gate in front of the
  // real storage's copy), while the job is taken over; its lease and heartbeat are long, so it
  // learns nothing of the takeover but what the database refuses it
  let atCopy!: () => void
  const reached = new Promise<void>(resolve => { atCopy = resolve })
  let open!: () => void
  const gate = new Promise<void>(resolve => { open = resolve })
  const storage = new Proxy(app.storage, {
    get (target, p) {
      if (p === 'copy') return async (...args: Parameters<DriveStorage['copy']>) => { atCopy(); await gate; return target.copy(...args) }
      const v = Reflect.get(target, p, target) as unknown
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
    }
  })
  const frozen = new JobEngine({ prisma: app.prisma, databaseUrl, log: app.log, concurrency: 1, leaseSeconds: 60, heartbeatMs: 60_000 })
  t.teardown(() => frozen.stop())
  const upload = await startMultipartUploadInto({ ...transferDeps(app), storage, engine: frozen }, alice.id, d.uuid)
  const data = randomImage(MiB)
  await upload.receive(Readable.from([data]), () => false)
  const committing = upload.commit().then(() => 'committed', (err: unknown) => err)
  await reached
  const other = new pg.Client({ connectionString: databaseUrl })
  await other.connect()
  t.teardown(() => other.end())
  t.ok(await takeOver(other, upload.jobId), 'the job was taken over after its commit point')
  open()
  const outcome = await committing
  t.not(outcome, 'committed', 'the stale attempt\'s commit failed')
  t.equal(sha256(await imageOf(d.uuid)), sha256(before), 'the drive\'s image was not replaced by the stale attempt')
  t.match(await app.prisma.drive.findUnique({ where: { id: d.uuid } }), { status: 'uploading', lockedByJob: upload.jobId }, 'nor the drive finished')
  t.match(await jobRow(app, upload.jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'nor the job')
  // the newer attempt (a worker, once the taken-over lease expires) finishes the upload from the scratch image
  await other.query('UPDATE jobs SET locked_until = now() - interval \'1 second\' WHERE id = $1::uuid', [upload.jobId])
  await startEngine(t, app, appHandlers(app), { databaseUrl })
  t.equal((await waitForJob(app, upload.jobId)).state, 'success', 'the newer attempt rolled it forward')
  t.equal(sha256(await imageOf(d.uuid)), sha256(data), 'the drive holds the uploaded file')
  t.match(await app.prisma.drive.findUnique({ where: { id: d.uuid } }), { status: 'unmounted', lockedByJob: null })
})
