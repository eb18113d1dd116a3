// Raw upload (§5.1): POST and PUT /drives/upload/[name], Content-Length = size, the uuid as text,
// the drive_upload job with its sha256; refusals before any byte is stored; a truncated body or a
// broken connection leaves nothing behind.
import t from 'tap'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { MiB, assertCutByClient, assertTakenOverMidBody, finishedUploadOf, listen, movedMiB, randomImage, rawPutHeaders, request, sha256, storageReleasesBuffers } from './helpers.ts'

const { app } = await buildTestApp(t, { config: { driveMaxSize: 64 * MiB } })
const alice = await createUser(app)
const api = client(app, alice)
const base = await listen(app)

const upload = (method: 'POST' | 'PUT', url: string, data: Buffer) => app.inject({
  method,
  url,
  headers: { authorization: alice.authorization, 'content-type': 'application/octet-stream' },
  payload: data
})

const drives = () => app.prisma.drive.count({ where: { ownerId: alice.id } })

t.test('POST streams the body into a new drive and answers its uuid as text', async t => {
  const data = randomImage(3 * MiB + 17)
  const res = await upload('POST', '/api/2.0/drives/upload/', data)
  t.equal(res.statusCode, 201, res.body)
  t.match(res.headers['content-type'], /^text\/plain/)
  const uuid = res.body
  t.match(uuid, /^[0-9a-f-]{36}$/, 'the body is just the uuid')
  t.equal(res.headers.location, `/api/2.0/drives/${uuid}/`)
  const got = await api.get(`/api/2.0/drives/${uuid}/`)
  t.equal(got.statusCode, 200, got.body)
  const drive = got.json()
  t.equal(drive.status, 'unmounted', 'unmounted once the last byte is stored')
  t.equal(drive.size, data.length, 'the drive has the size of the body')
  t.equal(drive.name, 'upload')
  t.equal(drive.jobs.length, 1)
  const job = (await api.get(`/api/2.0/jobs/${drive.jobs[0].uuid}/`)).json()
  t.equal(job.operation, 'drive_upload')
  t.equal(job.state, 'success')
  t.equal(job.data.progress, 100)
  t.match(job.data.description, /^received 3\.0 MiB in \d+\.\d s$/, 'the finished job says what was done, not "receiving …"')
  const row = await app.prisma.job.findUniqueOrThrow({ where: { id: drive.jobs[0].uuid } })
  t.same(row.result, { sha256: sha256(data), bytes: data.length }, 'the job result records the sha256 of what was received')
  const parts: Buffer[] = []
  for await (const c of await app.storage.createReadStream(uuid)) parts.push(c as Buffer)
  const stored = Buffer.concat(parts)
  t.ok(stored.equals(data), 'the image holds exactly the bytes sent')
  t.equal(await movedMiB(api, drive.jobs[0].uuid), 0, 'an injected request\'s buffers are the caller\'s: none moved')
})

t.test('over a real socket, stored reads move to the hash worker instead of being copied (local drives; rbd\'s are copied); bytes and sha256 exact', async t => {
  const data = randomImage(8 * MiB + 3)
  const res = await request(`${base}/api/2.0/drives/upload/`, { method: 'PUT', headers: { authorization: alice.authorization, 'content-type': 'application/octet-stream', 'content-length': String(data.length) }, body: data })
  t.equal(res.status, 201, res.body.toString())
  const uuid = res.body.toString()
  const jobId = (await api.get(`/api/2.0/drives/${uuid}/`)).json().jobs[0].uuid
  const row = await app.prisma.job.findUniqueOrThrow({ where: { id: jobId } })
  t.same(row.result, { sha256: sha256(data), bytes: data.length }, 'the sha256 of the bytes sent')
  const parts: Buffer[] = []
  for await (const c of await app.storage.createReadStream(uuid)) parts.push(c as Buffer)
  t.ok(Buffer.concat(parts).equals(data), 'the image holds exactly the bytes sent (nothing moved before it was written)')
  const moved = await movedMiB(api, jobId)
  if (storageReleasesBuffers) t.ok(moved >= 7, `${moved} MiB of 8 moved without a copy (reads that also held the headers are copied)`)
  else t.equal(moved, 0, 'nothing moved: the pipe to rbd may still hold the buffers')
})

t.test('PUT (curl -T) with a file name names the drive', async t => {
  const data = randomImage(100_000)
  const res = await upload('PUT', '/api/2.0/drives/upload/my%20image.raw?media=cdrom', data)
  t.equal(res.statusCode, 201, res.body)
  const drive = (await api.get(`/api/2.0/drives/${res.body}/`)).json()
  t.equal(drive.name, 'my image.raw')
  t.equal(drive.media, 'cdrom')
  t.equal(drive.status, 'unmounted')
})

t.test('a size above the drive maximum is refused before anything is stored', async t => {
  const before = await drives()
  const res = await request(`${base}/api/2.0/drives/upload/`, {
    method: 'POST',
    headers: { authorization: alice.authorization, 'content-type': 'application/octet-stream', 'content-length': String(65 * MiB) },
    body: Buffer.alloc(0)
  }).catch(() => undefined)
  // the server answers at once; depending on timing the socket may be reset while we "send"
  if (res) {
    t.equal(res.status, 413)
    t.match(JSON.parse(res.body.toString())[0], { error_type: 'validation', error_point: 'Content-Length' })
  }
  t.equal(await drives(), before, 'no drive was created')
  t.equal(await app.prisma.job.count({ where: { ownerId: alice.id, operation: 'drive_upload', state: { not: 'success' } } }), 0, 'no job either')
})

t.test('without Content-Length (chunked transfer encoding) the upload is refused with 411', async t => {
  const before = await drives()
  const res = await request(`${base}/api/2.0/drives/upload/`, {
    method: 'POST',
    headers: { authorization: alice.authorization, 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' },
    body: Buffer.from('hello')
  })
  t.equal(res.status, 411)
  t.equal(await drives(), before)
})

t.test('another content type is 415, and no credentials is 401', async t => {
  const res = await app.inject({ method: 'POST', url: '/api/2.0/drives/upload/', headers: { authorization: alice.authorization, 'content-type': 'text/plain' }, payload: 'abc' })
  t.equal(res.statusCode, 415)
  const anon = await app.inject({ method: 'POST', url: '/api/2.0/drives/upload/', headers: { 'content-type': 'application/octet-stream' }, payload: Buffer.alloc(10) })
  t.equal(anon.statusCode, 401)
})

t.test('a body shorter than its Content-Length leaves no drive behind (inject)', async t => {
  const before = await drives()
  const res = await app.inject({
    method: 'POST',
    url: '/api/2.0/drives/upload/',
    headers: { authorization: alice.authorization, 'content-type': 'application/octet-stream', 'content-length': String(2 * MiB) },
    payload: randomImage(MiB)
  })
  t.equal(res.statusCode, 400, res.body)
  t.equal(await drives(), before, 'the drive row is gone')
  const job = await app.prisma.job.findFirstOrThrow({ where: { ownerId: alice.id, operation: 'drive_upload' }, orderBy: { created: 'desc' } })
  t.equal(job.state, 'error')
  const driveId = (job.params as { driveId: string }).driveId
  t.notOk(await app.storage.exists(driveId), 'the image file is gone')
})

const rawPut = (name: string, length: number) => rawPutHeaders(base, alice.authorization, name, length)

t.test('a connection broken mid-body leaves no drive behind (real socket)', async t => {
  const before = await drives()
  const sock = await rawPut('broken.raw', 8 * MiB)
  sock.write(randomImage(3 * MiB))
  // the upload has begun: its drive is visible in `uploading`
  const uploading = await eventually(async () => (await app.prisma.drive.findFirst({ where: { ownerId: alice.id, name: 'broken.raw' } })) ?? undefined)
  t.equal(uploading.status, 'uploading')
  sock.destroy()
  t.equal((await finishedUploadOf(app, alice.id, uploading.id)).state, 'error')
  t.equal(await drives(), before, 'no drive is left')
  t.notOk(await app.storage.exists(uploading.id), 'no image file is left')
})

t.test('a client that hangs up mid-body is a validation error of the job, not a database outage (real socket)', async t => {
  const sock = await rawPut('cutclose', 1000)
  sock.write('abcde')
  const uploading = await eventually(async () => (await app.prisma.drive.findFirst({ where: { ownerId: alice.id, name: 'cutclose' } })) ?? undefined)
  sock.end()
  sock.destroy()
  await assertCutByClient(t, app, alice.id, uploading.id)
})

t.test('a request whose job was taken over mid-body touches nothing more: 503, the drive and its image are left to the newer attempt (real socket)', async t => {
  const sock = await rawPut('stale.raw', 4 * MiB)
  sock.write(randomImage(MiB))
  await assertTakenOverMidBody(t, app, sock, alice.id, 'stale.raw')
})
