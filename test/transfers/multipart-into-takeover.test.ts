// A multipart upload into an existing drive whose process dies (SIGKILL: nothing more is written,
// its lease simply expires) is taken over by another process's worker, which must undo only what
// the upload made: the drive keeps its data and goes back to its resting status, the scratch image
// the upload was streaming into is removed (its id is in the job's params), and the job fails.
// The drive is never deleted: it existed before the upload. Once the file was complete (its commit
// point, written ahead as the job's checkpoint), the takeover finishes the upload instead; also when
// the request was only held up inside its rename past its lease and a worker of its own process
// takes the job over (the engine stops renewing a lease its holder gave up; the two attempts'
// copies each have their own partial file).
import t from 'tap'
import type { Test } from 'tap'
import { Readable } from 'node:stream'
import { JobEngine } from '../../src/engine/engine.ts'
import { transferDeps } from '../../src/features/transfers/service.ts'
import { startMultipartUploadInto } from '../../src/features/transfers/upload-into.ts'
import { startMultipartUpload } from '../../src/features/transfers/upload-multipart.ts'
import type { DriveStorage } from '../../src/storage/index.ts'
import { copiesHeldInFence } from '../helpers/gate.ts'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { holdThread, waitForJob } from '../helpers/jobs.ts'
import { MiB, driveContents, randomImage, sha256, uploadForm } from './helpers.ts'

const LEASE_SECONDS = 2
// the app's own workers stand in for the process that survives and takes the job over
const { app, databaseUrl } = await buildTestApp(t, { config: { driveMaxSize: 8 * MiB } })
const alice = await createUser(app)
const api = client(app, alice)

const form = uploadForm

/** A drive holding `bytes` (written by a complete upload into it), idle. */
async function driveWith (t: Test, bytes: Buffer): Promise<string> {
  const res = await api.post('/api/2.0/drives/', { name: 'precious', size: bytes.length, media: 'disk' })
  const uuid = res.json().objects[0].uuid
  await eventually(async () => (await api.get(`/api/2.0/drives/${uuid}/`)).json().status === 'unmounted' || undefined)
  const f = form({ uuid }, bytes)
  const up = await app.inject({ method: 'POST', url: '/api/2.0/_upload/', headers: { authorization: alice.authorization, ...f.headers }, payload: f.payload })
  t.equal(up.statusCode, 200, up.body)
  return uuid
}

const contents = (uuid: string) => driveContents(app, api, uuid)

/**
 * Starts an upload into `uuid` in a "process" of its own (an engine holding the job with a short
 * lease), which then dies before the file has arrived: crash() writes nothing, like SIGKILL, so
 * the request's own undo never runs. Returns the job's id once the upload is under way.
 */
async function uploadThenDie (t: Test, uuid: string, tamper?: (jobId: string) => Promise<void>): Promise<{ jobId: string, scratch: string }> {
  const doomed = new JobEngine({ prisma: app.prisma, databaseUrl, log: app.log, concurrency: 1, leaseSeconds: LEASE_SECONDS })
  t.teardown(() => doomed.stop())
  const upload = await startMultipartUploadInto({ ...transferDeps(app), engine: doomed }, alice.id, uuid)
  t.equal((await api.get(`/api/2.0/drives/${uuid}/`)).json().status, 'uploading', 'the drive is uploading')
  // the scratch image, as the job records it (any storage backend)
  const scratch = ((await app.prisma.job.findUniqueOrThrow({ where: { id: upload.jobId } })).params as { scratch?: string }).scratch ?? ''
  t.ok(scratch !== '' && await app.storage.exists(scratch), `the upload made its scratch image (${scratch})`)
  await tamper?.(upload.jobId)
  doomed.crash()
  return { jobId: upload.jobId, scratch }
}

async function assertUndone (t: Test, uuid: string, { jobId, scratch }: { jobId: string, scratch: string }, was: { status: string, bytes: Buffer }) {
  const job = await waitForJob(app, jobId, { timeoutMs: 20_000 })
  t.equal(job.state, 'error', 'the job failed')
  t.match(job.error, { error_message: /stopped|interrupted/ }, `with a clear message (${JSON.stringify(job.error)})`)
  t.ok(job.attempts >= 2, 'after a takeover')
  const drive = await app.prisma.drive.findUnique({ where: { id: uuid } })
  t.ok(drive, 'the drive still exists')
  t.equal(drive?.status, was.status, 'back to its resting status')
  t.equal(drive?.lockedByJob, null, 'no longer held by the upload')
  t.equal((await api.get(`/api/2.0/drives/${uuid}/`)).json().status, was.status)
  const data = await contents(uuid)
  t.equal(data.length, was.bytes.length)
  t.equal(sha256(data), sha256(was.bytes), 'its image is exactly as it was')
  t.notOk(await app.storage.exists(scratch), 'the scratch image is gone')
  t.ok(await app.storage.exists(uuid), 'the drive\'s image is still there')
}

t.test('taken over after the process died: the drive keeps its data and status, the scratch image goes', async t => {
  const bytes = randomImage(1 * MiB)
  const uuid = await driveWith(t, bytes)
  t.ok(await app.storage.exists(uuid))
  const was = { status: 'unmounted', bytes }
  await assertUndone(t, uuid, await uploadThenDie(t, uuid), was)
})

t.test('a drive attached to a stopped server goes back to mounted', async t => {
  const bytes = randomImage(1 * MiB)
  const uuid = await driveWith(t, bytes)
  const server = await api.post('/api/2.0/servers/', { name: 's', cpu: 1000, mem: 536870912, vnc_password: 'x', drives: [{ device: 'virtio', dev_channel: '0:0', drive: uuid }] })
  t.equal(server.statusCode, 201, server.body)
  await eventually(async () => (await api.get(`/api/2.0/drives/${uuid}/`)).json().status === 'mounted' || undefined)
  const was = { status: 'mounted', bytes }
  await assertUndone(t, uuid, await uploadThenDie(t, uuid), was)
})

t.test('a job recorded without its scratch id (enqueued by an older version) still never deletes the drive', async t => {
  const bytes = randomImage(1 * MiB)
  const uuid = await driveWith(t, bytes)
  const was = { status: 'unmounted', bytes }
  const { jobId, scratch } = await uploadThenDie(t, uuid, async (id) => {
    const row = await app.prisma.job.findUniqueOrThrow({ where: { id } })
    const { scratch: _, ...params } = row.params as Record<string, string | number>
    await app.prisma.job.update({ where: { id }, data: { params } })
  })
  const job = await waitForJob(app, jobId, { timeoutMs: 20_000 })
  t.equal(job.state, 'error')
  const drive = await app.prisma.drive.findUnique({ where: { id: uuid } })
  t.equal(drive?.status, was.status, 'the drive is back to its status')
  t.equal(drive?.lockedByJob, null)
  t.equal(sha256(await contents(uuid)), sha256(bytes), 'with its data')
  // nothing knows the scratch image's id any more: it stays (as it did before ids were recorded)
  t.ok(await app.storage.exists(scratch), 'an unrecorded scratch image is left alone')
})

t.test('unchanged for a new drive: a multipart upload of a new drive whose process died removes the half-made drive', async t => {
  const doomed = new JobEngine({ prisma: app.prisma, databaseUrl, log: app.log, concurrency: 1, leaseSeconds: LEASE_SECONDS })
  t.teardown(() => doomed.stop())
  const upload = await startMultipartUpload({ ...transferDeps(app), engine: doomed }, alice.id, { name: 'half-made', media: 'disk' }, undefined)
  t.ok(await app.storage.exists(upload.driveId), 'the new drive\'s image exists')
  doomed.crash()
  const job = await waitForJob(app, upload.jobId, { timeoutMs: 20_000 })
  t.equal(job.state, 'error')
  t.equal(await app.prisma.drive.findUnique({ where: { id: upload.driveId } }), null, 'the half-made drive is removed')
  t.notOk(await app.storage.exists(upload.driveId), 'with its image')
})

/**
 * The real storage, except that this "process" dies at `at` during the commit: crash() ends its
 * lease (nothing more it writes may count), and the step fails, as a SIGKILL would stop it there.
 */
function dyingAt (at: 'copy' | 'copied' | 'scratch removed' | 'copy fails', die: () => void): DriveStorage {
  const real = app.storage
  return new Proxy(real, {
    get (target, prop, receiver) {
      if (prop === 'copy') {
        return async (from: string, to: string) => {
          if (at === 'copy fails') throw new Error('no space left on the device')
          if (at === 'copy') { die(); throw new Error('killed before the copy') }
          await real.copy(from, to)
          if (at === 'copied') { die(); throw new Error('killed after the copy') }
        }
      }
      if (prop === 'delete') {
        return async (id: string) => {
          await real.delete(id)
          if (at === 'scratch removed') { die(); throw new Error('killed after removing the scratch image') }
        }
      }
      const v = Reflect.get(target, prop, receiver) as unknown
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
    }
  })
}

for (const at of ['copy', 'copied', 'scratch removed'] as const) {
  t.test(`died after the file was complete (at: ${at}): the takeover finishes the upload, the drive holds the new image`, async t => {
    const old = randomImage(1 * MiB)
    const uuid = await driveWith(t, old)
    const doomed = new JobEngine({ prisma: app.prisma, databaseUrl, log: app.log, concurrency: 1, leaseSeconds: LEASE_SECONDS })
    t.teardown(() => doomed.stop())
    const upload = await startMultipartUploadInto({ ...transferDeps(app), storage: dyingAt(at, () => doomed.crash()), engine: doomed }, alice.id, uuid)
    const scratch = ((await app.prisma.job.findUniqueOrThrow({ where: { id: upload.jobId } })).params as { scratch: string }).scratch
    const fresh = randomImage(1 * MiB)
    await upload.receive(Readable.from([fresh]), () => false)
    // the request's answer: the job is another process's now
    const err = await upload.commit().then(() => undefined, (e: unknown) => e)
    t.match(err, { code: 'busy' }, 'the dying request did not claim success or undo anything')

    const job = await waitForJob(app, upload.jobId, { timeoutMs: 20_000 })
    t.equal(job.state, 'success', `the job succeeded after the takeover (${JSON.stringify(job.error)})`)
    t.ok(job.attempts >= 2, 'after a takeover')
    t.same(job.result, { sha256: sha256(fresh), bytes: fresh.length }, 'with the sha256 of the uploaded file')
    t.match(job.description, /stored after a takeover/)
    const drive = await app.prisma.drive.findUniqueOrThrow({ where: { id: uuid } })
    t.equal(drive.status, 'unmounted', 'the drive is back to its resting status')
    t.equal(drive.lockedByJob, null)
    t.equal(sha256(await contents(uuid)), sha256(fresh), 'and holds the uploaded image, whole')
    t.notOk(await app.storage.exists(scratch), 'the scratch image is gone')
    const log = (await api.get(`/api/2.0/jobs/${upload.jobId}/log/`)).body
    t.match(log, at === 'scratch removed' ? /had already replaced/ : /replaced the drive's/, 'the log says what the takeover did')
  })
}

t.test('a copy that fails after the commit point (the process lives) records the error: the drive keeps its data, the scratch image goes', async t => {
  const old = randomImage(1 * MiB)
  const uuid = await driveWith(t, old)
  const upload = await startMultipartUploadInto({ ...transferDeps(app), storage: dyingAt('copy fails', () => {}) }, alice.id, uuid)
  const scratch = ((await app.prisma.job.findUniqueOrThrow({ where: { id: upload.jobId } })).params as { scratch: string }).scratch
  await upload.receive(Readable.from([randomImage(1 * MiB)]), () => false)
  t.ok(await upload.commit().then(() => false, () => true), 'the request fails')
  const job = await waitForJob(app, upload.jobId, { timeoutMs: 20_000 })
  t.equal(job.state, 'error', 'the job failed, in this attempt')
  t.equal(job.attempts, 1)
  const drive = await app.prisma.drive.findUniqueOrThrow({ where: { id: uuid } })
  t.equal(drive.status, 'unmounted')
  t.equal(drive.lockedByJob, null)
  t.equal(sha256(await contents(uuid)), sha256(old), 'the drive\'s image is as it was')
  t.notOk(await app.storage.exists(scratch), 'the scratch image is gone')
})

t.test('held up inside its fenced rename past its lease, taken over in the same process: the takeover stores the upload', async t => {
  const old = randomImage(1 * MiB)
  const uuid = await driveWith(t, old)
  // the request's "process" holds the job with a short lease; the app's own workers, in this same
  // process and sharing its storage, take the job over
  const holder = new JobEngine({ prisma: app.prisma, databaseUrl, log: app.log, concurrency: 1, leaseSeconds: LEASE_SECONDS })
  t.teardown(() => holder.stop())
  // the real storage, whose copy is held up (the thread does not run: stopped or swapped out)
  // inside its fenced step, the job row locked, just before the rename, past the lease
  const { proxy: storage, renamed } = copiesHeldInFence(app.storage, () => holdThread(LEASE_SECONDS * 1000 + 500))
  const upload = await startMultipartUploadInto({ ...transferDeps(app), storage, engine: holder }, alice.id, uuid)
  const fresh = randomImage(1 * MiB)
  await upload.receive(Readable.from([fresh]), () => false)
  const err = await upload.commit().then(() => undefined, (e: unknown) => e)
  t.match(err, { code: 'busy' }, 'the held-up request answers that its job is another\'s now')
  t.same(renamed, [], 'its guard refused the rename')
  const job = await waitForJob(app, upload.jobId, { timeoutMs: 20_000 })
  t.equal(job.state, 'success', `the takeover stored the upload (${JSON.stringify(job.error)})`)
  t.ok(job.attempts >= 2, 'after a takeover')
  t.same(job.result, { sha256: sha256(fresh), bytes: fresh.length })
  const drive = await app.prisma.drive.findUniqueOrThrow({ where: { id: uuid } })
  t.match(drive, { status: 'unmounted', lockedByJob: null }, 'the drive is back to its resting status')
  t.equal(sha256(await contents(uuid)), sha256(fresh), 'and holds the uploaded image, whole')
})
