// A stale attempt of drive_upload (a chunked upload finished by a worker: its job was taken over
// by a newer attempt while it was held up) does not finish the drive; the newer one does
// (test/helpers/takeover.ts).
import t from 'tap'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { waitForJob } from '../helpers/jobs.ts'
import { jobRow, runStale, TAKEN_BY } from '../helpers/takeover.ts'
import { MiB, randomImage } from './helpers.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false, config: { storage: 'local' } })
const alice = await createUser(app)
const api = client(app, alice)

const link = async (uuid: string, n: number) => (await api.post(`/api/2.0/drives/${uuid}/action/?do=upload_chunk`, { chunk_number: n, chunk_size: MiB })).json().link as string
const put = (url: string, payload: Buffer) => app.inject({ method: 'POST', url, headers: { 'content-type': 'application/octet-stream', accept: 'application/json' }, payload })

t.test('drive_upload (chunked, finished by a worker): a stale attempt does not finish the drive; the newer one does', async t => {
  const data = randomImage(2 * MiB + 7)
  const d = (await api.post('/api/2.0/initupload/', { name: 'chunked', size: data.length, media: 'disk' })).json().objects[0]
  const jobId = d.jobs[0].uuid as string
  // out of order (the last chunk first): the job is left to a worker, which hashes the image
  t.equal((await put(await link(d.uuid, 1), data.subarray(MiB))).statusCode, 200)
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
