// A client generated from the committed OpenAPI document (openapi-typescript + openapi-fetch)
// drives a whole flow against a running service: create, clone, wait, list jobs, download.
import t from 'tap'
import { randomBytes, createHash } from 'node:crypto'
import createClient from 'openapi-fetch'
import type { paths } from '../../openapi/client/schema.d.ts'
import { buildTestApp, createUser } from '../helpers/app.ts'

const { app } = await buildTestApp(t)
const user = await createUser(app)
const address = await app.listen({ host: '127.0.0.1', port: 0 })
const client = createClient<paths>({ baseUrl: address, headers: { authorization: user.authorization } })

t.test('create a drive, clone it, wait for the job, list jobs, download the clone', async t => {
  const created = await client.POST('/api/2.0/drives/', { body: { name: 'sdk-drive', size: 4 * 1024 * 1024, media: 'disk' } as never })
  t.equal(created.response.status, 201)
  const drive = (created.data as { objects: Array<{ uuid: string, jobs: Array<{ uuid: string }> }> }).objects[0]
  const createJob = await client.GET('/api/2.0/jobs/{uuid}/', { params: { path: { uuid: drive.jobs[0].uuid }, query: { wait: 30 } as never } })
  t.equal(createJob.data?.state, 'success', 'drive_create finished')

  // real bytes in the source, so the download proves the clone copied them
  const payload = randomBytes(1024 * 1024)
  const writer = await app.storage.openForWrite(drive.uuid)
  await writer.write(payload, 1024 * 1024)
  await writer.close()

  // each ?do= action has a typed operation of its own, at its wire URL
  const cloned = await client.POST('/api/2.0/drives/{uuid}/action/?do=clone', { params: { path: { uuid: drive.uuid } }, body: { name: 'sdk-clone' } })
  t.equal(cloned.response.status, 202)
  const clone = cloned.data!.objects[0]
  t.equal(clone.status, 'cloning_dst')
  const cloneJob = clone.jobs![0].uuid

  const job = await client.GET('/api/2.0/jobs/{uuid}/', { params: { path: { uuid: cloneJob }, query: { wait: 30 } as never } })
  t.equal(job.data?.operation, 'drive_clone')
  t.equal(job.data?.state, 'success')
  t.equal(job.data?.data?.progress, 100)

  const jobs = await client.GET('/api/2.0/jobs/', { params: { query: { limit: 0 } } })
  t.ok(jobs.data?.objects.some((j: { uuid?: string }) => j.uuid === cloneJob), 'the clone job is listed')
  t.equal(jobs.data?.meta.total_count, jobs.data?.objects.length)

  const download = await client.GET('/api/2.0/drives/{uuid}/download/', { params: { path: { uuid: clone.uuid! } }, parseAs: 'arrayBuffer' })
  t.equal(download.response.status, 200)
  const bytes = Buffer.from(download.data as ArrayBuffer)
  t.equal(bytes.length, 4 * 1024 * 1024)
  const expected = Buffer.alloc(4 * 1024 * 1024)
  payload.copy(expected, 1024 * 1024)
  t.equal(createHash('sha256').update(bytes).digest('hex'), createHash('sha256').update(expected).digest('hex'), 'the clone downloads byte for byte')

  const missing = await client.GET('/api/2.0/drives/{uuid}/', { params: { path: { uuid: '00000000-0000-4000-8000-000000000000' } } })
  t.equal(missing.response.status, 404)
  t.equal((missing.error as Array<{ error_type: string }>)[0].error_type, 'notexist', 'errors arrive as the CloudSigma array')
})
