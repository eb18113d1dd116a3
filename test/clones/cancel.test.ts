// Cancel and failure mid-copy (issue 6, item 4): a large dense clone cancelled through the API
// stops within about a second and leaves nothing half-made; a handler failing midway through the
// copy fails the job with its reason and cleans up the same way.
import { readdirSync } from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { JobFailure, type JobContext } from '../../src/engine/types.ts'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { MiB, driveStatus, finishedJob, getJob, readyDrive, writeRandom } from './helpers.ts'

const { app, config } = await buildTestApp(t)
const alice = await createUser(app)
const api = client(app, alice)

const src = await readyDrive(api, { name: 'dense', size: 512 * MiB })
await writeRandom(app, src.uuid, 0, 512 * MiB)

/** Image files (and partial copies) under the drives folder. */
function images (): string[] {
  const out: string[] = []
  for (const dir of readdirSync(config.drivesDir)) out.push(...readdirSync(path.join(config.drivesDir, dir)))
  return out
}

t.test('cancel mid-copy: cancelled within about a second, destination gone, source back', async t => {
  const res = await api.post(`/api/2.0/drives/${src.uuid}/action/?do=clone`, {})
  const dst = res.json().objects[0]
  const jobId = dst.jobs[0].uuid
  await eventually(async () => (await app.prisma.job.findUniqueOrThrow({ where: { id: jobId } })).state === 'started', { intervalMs: 10 })
  const asked = Date.now()
  const cancel = await api.post(`/api/2.0/jobs/${jobId}/action/?do=cancel`, {})
  t.equal(cancel.statusCode, 202, cancel.body)
  const job = await finishedJob(api, jobId)
  const ms = Date.parse(job.finished_at) - asked
  t.equal(job.state, 'cancelled')
  t.equal(job.error.error_type, 'cancelled')
  // the abort reaches cp within a second; cleanup and bookkeeping come on top (slack for a loaded CI box)
  t.ok(ms < 2500, `finished ${ms} ms after the cancel`)
  t.equal(await driveStatus(api, dst.uuid), 404, 'the destination drive is gone')
  t.notOk(images().some(f => f.startsWith(dst.uuid)), 'no image or partial copy is left')
  t.equal(await driveStatus(api, src.uuid), 'unmounted', 'the source is back to its status')
  t.equal((await app.prisma.drive.findUniqueOrThrow({ where: { id: src.uuid } })).readers, 0)
  t.equal((await api.post(`/api/2.0/jobs/${jobId}/action/?do=cancel`, {})).statusCode, 400, 'a finished job cannot be cancelled')
})

t.test('a handler failing midway through the copy: job error with the reason, nothing half-made', async t => {
  const handler = app.jobs.handler('drive_clone')!
  const run = handler.run
  // the storage stops the copy when its progress callback throws: fail once data has moved
  handler.run = (ctx: JobContext) => run({
    ...ctx,
    progress: (u) => {
      if ((u.bytesDone ?? 0) > 0) throw new JobFailure('the destination disk broke midway')
      ctx.progress(u)
    }
  })
  t.teardown(() => { handler.run = run })
  const res = await api.post(`/api/2.0/drives/${src.uuid}/action/?do=clone`, {})
  const dst = res.json().objects[0]
  const job = await finishedJob(api, dst.jobs[0].uuid)
  t.equal(job.state, 'error')
  t.same(job.error, { error_type: 'backend', error_message: 'the destination disk broke midway' })
  t.not(job.data.progress, 100)
  t.equal(await driveStatus(api, dst.uuid), 404)
  t.notOk(images().some(f => f.startsWith(dst.uuid)), 'no image or partial copy is left')
  t.equal(await driveStatus(api, src.uuid), 'unmounted')
  t.equal((await app.prisma.drive.findUniqueOrThrow({ where: { id: src.uuid } })).readers, 0)
  t.same((await getJob(api, dst.jobs[0].uuid)).resources, [`/api/2.0/drives/${src.uuid}/`, `/api/2.0/drives/${dst.uuid}/`])
})

t.test('after a cancel and a failure the source still clones, and the copy is complete', async t => {
  const res = await api.post(`/api/2.0/drives/${src.uuid}/action/?do=clone`, {})
  const dst = res.json().objects[0]
  const job = await finishedJob(api, dst.jobs[0].uuid, 60_000)
  t.equal(job.state, 'success')
  t.ok(job.data.bytes_total >= 512 * MiB && job.data.bytes_total < 513 * MiB, `bytes_total ${job.data.bytes_total} is the data held`)
  t.equal(await driveStatus(api, dst.uuid), 'unmounted')
})
