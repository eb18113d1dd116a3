// Concurrency (issue 6, item 5): many clones of one source at once, and a source that cannot be
// deleted or resized while it is being read. Workers are started and stopped by the test, so the
// clones are held queued while the busy rules are checked.
import t from 'tap'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { releaseSource } from '../../src/features/clones/handlers/drive-clone.ts'
import { MiB, driveStatus, finishedJob, pollingWorker, readyDrive, sha256, writeRandom } from './helpers.ts'

const { app } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const api = client(app, alice)

t.test('two clones of one source at once: the source is cloning_src and refuses delete and resize with 503, both copies are identical', async t => {
  const setup = pollingWorker(app)
  const src = await readyDrive(api, { name: 'shared', size: 96 * MiB })
  await writeRandom(app, src.uuid, 0, 8 * MiB)
  await writeRandom(app, src.uuid, 64 * MiB, 8 * MiB)
  await setup.stop()

  const [r1, r2] = await Promise.all([
    api.post(`/api/2.0/drives/${src.uuid}/action/?do=clone`, { name: 'one' }),
    api.post(`/api/2.0/drives/${src.uuid}/action/?do=clone`, { name: 'two' })
  ])
  t.equal(r1.statusCode, 202)
  t.equal(r2.statusCode, 202)
  const [d1, d2] = [r1.json().objects[0], r2.json().objects[0]]
  const source = (await api.get(`/api/2.0/drives/${src.uuid}/`)).json()
  t.equal(source.status, 'cloning_src')
  t.equal(source.jobs.length, 3, 'its create job and both clone jobs')
  t.equal((await app.prisma.drive.findUniqueOrThrow({ where: { id: src.uuid } })).readers, 2)
  const listed = (await api.get('/api/2.0/drives/?status=cloning_src')).json()
  t.same(listed.objects.map((o: any) => o.uuid), [src.uuid], 'the status filter sees it too')

  const del = await api.delete(`/api/2.0/drives/${src.uuid}/`)
  t.equal(del.statusCode, 503, 'delete while read')
  t.equal(del.json()[0].error_type, 'concurrency')
  const resize = await api.post(`/api/2.0/drives/${src.uuid}/action/?do=resize`, { name: 'shared', size: 128 * MiB, media: 'disk' })
  t.equal(resize.statusCode, 503, 'resize while read')
  const put = await api.put(`/api/2.0/drives/${src.uuid}/`, { size: 128 * MiB })
  t.equal(put.statusCode, 503, 'PUT with a new size while read')
  const rename = await api.put(`/api/2.0/drives/${src.uuid}/`, { name: 'renamed' })
  t.equal(rename.statusCode, 200, 'editing the name is fine')
  t.equal(rename.json().status, 'cloning_src')
  const third = await api.post(`/api/2.0/drives/${src.uuid}/action/?do=clone`, { name: 'three' })
  t.equal(third.statusCode, 202, 'another clone of a source being cloned is fine')
  const dst = third.json().objects[0]
  t.equal((await api.post(`/api/2.0/drives/${dst.uuid}/action/?do=clone`, {})).statusCode, 503, 'a destination is not a source yet')

  const run = pollingWorker(app)
  t.teardown(() => run.stop())
  const jobs = await Promise.all([d1, d2, dst].map(d => finishedJob(api, d.jobs[0].uuid)))
  t.same(jobs.map(j => j.state), ['success', 'success', 'success'])
  const want = await sha256(app, src.uuid)
  for (const d of [d1, d2, dst]) {
    t.equal(await sha256(app, d.uuid), want, `${d.name} is byte-identical`)
    t.equal(await driveStatus(api, d.uuid), 'unmounted')
  }
  t.equal(await driveStatus(api, src.uuid), 'unmounted', 'the source is back once the last reader is done')
  t.equal((await app.prisma.drive.findUniqueOrThrow({ where: { id: src.uuid } })).readers, 0)
  t.equal((await api.delete(`/api/2.0/drives/${src.uuid}/`)).statusCode, 204, 'and can be deleted now')
  await eventually(async () => (await api.get(`/api/2.0/drives/${src.uuid}/`)).statusCode === 404)
})

t.test('a clone job that never ran still gives its reader back when cancelled', async t => {
  const setup = pollingWorker(app)
  const src = await readyDrive(api, { name: 'held', size: 4 * MiB })
  await setup.stop()
  const res = await api.post(`/api/2.0/drives/${src.uuid}/action/?do=clone`, {})
  const dst = res.json().objects[0]
  t.equal(await driveStatus(api, src.uuid), 'cloning_src')
  t.equal((await api.post(`/api/2.0/jobs/${dst.jobs[0].uuid}/action/?do=cancel`, {})).statusCode, 202)
  const run = pollingWorker(app)
  t.teardown(() => run.stop())
  const job = await finishedJob(api, dst.jobs[0].uuid)
  t.equal(job.state, 'cancelled')
  t.equal(await driveStatus(api, dst.uuid), 404, 'the destination is removed')
  t.equal(await driveStatus(api, src.uuid), 'unmounted')
  t.equal((await app.prisma.drive.findUniqueOrThrow({ where: { id: src.uuid } })).readers, 0)
})

t.test('a source its clone job gave back can be written before the engine records the job\'s end', async t => {
  const setup = pollingWorker(app)
  const src = await readyDrive(api, { name: 'given back', size: 4 * MiB })
  await setup.stop()
  const dst = (await api.post(`/api/2.0/drives/${src.uuid}/action/?do=clone`, {})).json().objects[0]
  const jobId = dst.jobs[0].uuid as string
  // the clone runs: while it reads the source, a write on the source is refused
  await app.prisma.job.update({ where: { id: jobId }, data: { state: 'started' } })
  const busy = await api.post(`/api/2.0/drives/${src.uuid}/action/?do=resize`, { name: src.name, size: 8 * MiB, media: 'disk' })
  t.equal(busy.statusCode, 503, 'resize refused while the running clone reads the source')
  t.match(busy.json()[0].error_message, /is busy \(cloning_src\)/)
  // its handler's last transaction: the destination rests, the reader is given back (and marked
  // in the job's checkpoint); the engine has not yet recorded the job's end
  await app.prisma.$transaction(async (tx) => {
    await tx.drive.update({ where: { id: dst.uuid }, data: { status: 'unmounted', lockedByJob: null } })
    t.equal(await releaseSource(tx, jobId, src.uuid), true)
  })
  t.equal(await driveStatus(api, src.uuid), 'unmounted', 'the source looks ready')
  const resize = await api.post(`/api/2.0/drives/${src.uuid}/action/?do=resize`, { name: src.name, size: 8 * MiB, media: 'disk' })
  t.equal(resize.statusCode, 202, 'and it is: the resize is not refused as busy')
  t.equal((await app.prisma.job.findUniqueOrThrow({ where: { id: jobId } })).state, 'started', 'the clone job was still unfinished')
  // the resize job now holds the source; put the clone job back as the engine would record it
  await app.prisma.job.update({ where: { id: jobId }, data: { state: 'success' } })
  const run = pollingWorker(app)
  t.teardown(() => run.stop())
  const resizeJob = (await api.get(`/api/2.0/drives/${src.uuid}/`)).json().jobs[0].uuid as string // newest first
  t.equal((await finishedJob(api, resizeJob)).state, 'success', 'the resize ran')
  t.equal((await api.get(`/api/2.0/drives/${src.uuid}/`)).json().size, 8 * MiB)
})
