// resumable.js uploads (issue 15, spec §5.3): GET /drives/{uuid}/upload/ answers 200 for a stored
// chunk and 404 otherwise; POST stores a chunk, as multipart built exactly as resumable.js 1.1.0
// builds it (the resumable* fields in the query string and as form fields, then the `file` part)
// or raw (its "octet" method). Chunks in any order, in parallel, twice; wrong lengths and sizes
// refused with 400; the drive ends unmounted with the file's sha256; one drive_upload job.
import t from 'tap'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { lockRow } from '../helpers/db.ts'
import { waitingForUs } from '../helpers/locks.ts'
import { waitForJob } from '../helpers/jobs.ts'
import { groupHeldSql } from '../../src/db/session-locks.ts'
import { chunkClaimGroup } from '../../src/domain/chunks.ts'
import { MiB, randomImage, sha256 } from './helpers.ts'

const { app, databaseUrl } = await buildTestApp(t)
const alice = await createUser(app)
const bob = await createUser(app)
const api = client(app, alice)
const bobApi = client(app, bob)

const S = MiB
const init = async (size: number) => {
  const res = await api.post('/api/2.0/initupload/', { name: 'resumable', size, media: 'disk' })
  if (res.statusCode !== 201) throw new Error(`initupload: ${res.statusCode} ${res.body}`)
  return res.json().objects[0] as { uuid: string, jobs: Array<{ uuid: string }> }
}
/** Whether a chunk of drive `uuid`'s upload is claimed (being received) by any process. */
const claimed = async (uuid: string, owner = alice.id) => (await app.prisma.$queryRawUnsafe<Array<{ held: boolean }>>(`SELECT ${groupHeldSql('$1')} AS held`, chunkClaimGroup(owner, uuid)))[0].held

interface Chunk { number: number, start: number, end: number }

/** resumable.js's geometry with forceChunkSize=false: floor(size / S) chunks (at least 1), the last takes the rest. */
function chunksOf (size: number, chunkSize = S): Chunk[] {
  const count = Math.max(Math.floor(size / chunkSize), 1)
  return Array.from({ length: count }, (_, i) => {
    const start = i * chunkSize
    let end = Math.min(size, (i + 1) * chunkSize)
    if (size - end < chunkSize) end = size
    return { number: i + 1, start, end }
  })
}

/** The parameters of resumable.js's ResumableChunk.send()/test(), in its order; empty values left out as it does. */
function params (file: Buffer, c: Chunk, chunkSize = S, over: Record<string, string | number> = {}): Array<[string, string]> {
  const all: Array<[string, string | number]> = [
    ['resumableChunkNumber', c.number],
    ['resumableChunkSize', chunkSize],
    ['resumableCurrentChunkSize', c.end - c.start],
    ['resumableTotalSize', file.length],
    ['resumableType', ''],
    ['resumableIdentifier', `${file.length}-imageraw`],
    ['resumableFilename', 'image.raw'],
    ['resumableRelativePath', 'image.raw'],
    ['resumableTotalChunks', chunksOf(file.length, chunkSize).length]
  ]
  return all.map(([k, v]): [string, string] => [k, String(over[k] ?? v)]).filter(([, v]) => v !== '')
}

const url = (uuid: string, p: Array<[string, string]>) => `/api/2.0/drives/${uuid}/upload/?` + p.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&')

const test = (uuid: string, file: Buffer, c: Chunk, as = api) => as.get(url(uuid, params(file, c)))

/** POST as resumable.js does in its default multipart mode (FormData: fields, then the blob as `file`). */
async function post (uuid: string, file: Buffer, c: Chunk, opts: { bytes?: Buffer, chunkSize?: number, over?: Record<string, string | number>, as?: typeof alice } = {}) {
  const p = params(file, c, opts.chunkSize, opts.over)
  const form = new FormData()
  for (const [k, v] of p) form.append(k, v)
  form.append('file', new Blob([opts.bytes ?? file.subarray(c.start, c.end)]), 'image.raw')
  const req = new Request('http://localhost/', { method: 'POST', body: form })
  const payload = Buffer.from(await req.arrayBuffer())
  const res = await app.inject({
    method: 'POST',
    url: url(uuid, p),
    headers: { authorization: (opts.as ?? alice).authorization, 'content-type': req.headers.get('content-type')! },
    payload
  })
  return Object.assign(res, { json: () => JSON.parse(res.body) })
}

t.test('GET answers 404 before a chunk is stored and 200 after; the drive ends unmounted with the file', async t => {
  const file = randomImage(3 * MiB + 777) // chunks 1, 2 of 1 MiB and 3 of 1 MiB + 777
  const d = await init(file.length)
  const chunks = chunksOf(file.length)
  t.equal(chunks.length, 3)
  for (const c of chunks) {
    const before = await test(d.uuid, file, c)
    t.equal(before.statusCode, 404, `chunk ${c.number} is not there yet`)
    t.match(before.json()[0], { error_type: 'notexist', error_point: 'resumableChunkNumber' })
  }
  const first = await post(d.uuid, file, chunks[0])
  t.equal(first.statusCode, 200, first.body)
  t.match(first.json(), { chunk: 1, bytes: MiB, chunks_stored: 1, chunks_total: 3, complete: false })
  t.equal((await test(d.uuid, file, chunks[0])).statusCode, 200, 'chunk 1 is stored')
  t.equal((await test(d.uuid, file, chunks[1])).statusCode, 404, 'chunk 2 is not')
  const mid = (await api.get(`/api/2.0/jobs/${d.jobs[0].uuid}/`)).json()
  t.match(mid, { operation: 'drive_upload', state: 'started' })
  t.equal(mid.data.bytes_done, MiB, 'progress counts the stored bytes')
  t.equal(mid.data.bytes_total, file.length)
  t.equal((await post(d.uuid, file, chunks[2])).statusCode, 200)
  const last = await post(d.uuid, file, chunks[1])
  t.match(last.json(), { chunk: 2, chunks_stored: 3, complete: true })
  const job = await waitForJob(app, d.jobs[0].uuid)
  t.equal(job.state, 'success')
  t.same(job.result, { sha256: sha256(file), bytes: file.length })
  t.equal((await api.get(`/api/2.0/drives/${d.uuid}/`)).json().status, 'unmounted')
  const dl = await api.get(`/api/2.0/drives/${d.uuid}/download/`)
  t.equal(sha256(dl.rawPayload), sha256(file), 'the drive holds exactly the file')
  // a chunk asked for or sent again after the upload completed (resumable.js retrying the chunk whose
  // answer it lost): stored, 200, as resumable.js needs to report the upload done; nothing written
  const after = await test(d.uuid, file, chunks[0])
  t.equal(after.statusCode, 200, `a chunk of the finished upload is stored: ${after.body}`)
  t.match(after.json(), { chunk: 1, chunks_stored: 3, chunks_total: 3, complete: true })
  const again = await post(d.uuid, file, chunks[1], { bytes: Buffer.alloc(chunks[1].end - chunks[1].start, 0x55) })
  t.equal(again.statusCode, 200, again.body)
  t.match(again.json(), { chunk: 2, chunks_stored: 3, complete: true })
  const still = await api.get(`/api/2.0/drives/${d.uuid}/download/`)
  t.equal(sha256(still.rawPayload), sha256(file), 'the bytes sent again were not written')
  t.equal((await post(d.uuid, file, chunks[1], { chunkSize: 2 * MiB, over: { resumableCurrentChunkSize: MiB + 777, resumableTotalChunks: 1, resumableChunkNumber: 1 } })).statusCode, 400, 'a geometry the upload did not have is still 400')
  t.equal((await app.prisma.job.count({ where: { ownerId: alice.id, operation: 'drive_upload', params: { path: ['driveId'], equals: d.uuid } } })), 1, 'no second upload job')
})

t.test('once the drive was resized after its upload, a chunk sent again no longer fits it (400 at resumableTotalSize)', async t => {
  const file = randomImage(2 * MiB)
  const d = await init(file.length)
  const chunks = chunksOf(file.length)
  for (const c of chunks) t.equal((await post(d.uuid, file, c)).statusCode, 200)
  await waitForJob(app, d.jobs[0].uuid)
  const resize = await api.post(`/api/2.0/drives/${d.uuid}/action/?do=resize`, { size: 4 * MiB })
  t.equal(resize.statusCode, 202, resize.body)
  await waitForJob(app, resize.json().objects[0].jobs[0].uuid)
  const after = await test(d.uuid, file, chunks[0])
  t.equal(after.statusCode, 400, after.body)
  t.equal(after.json()[0].error_point, 'resumableTotalSize')
})

t.test('chunks out of order and in parallel, duplicates among them, make one drive_upload job that completes once', async t => {
  const file = randomImage(8 * MiB + 4321)
  const d = await init(file.length)
  const chunks = chunksOf(file.length)
  t.equal(chunks.length, 8)
  const [a, b, ...rest] = [chunks[6], chunks[2], chunks[0], chunks[5], chunks[3], chunks[1]]
  // three at a time, as resumable.js's simultaneousUploads=3, the same chunk twice at once among them
  const answers = await Promise.all([a, b, a, ...rest.slice(0, 2)].map(c => post(d.uuid, file, c)))
  answers.push(...await Promise.all(rest.slice(2).map(c => post(d.uuid, file, c))))
  for (const res of answers) t.equal(res.statusCode, 200, res.body)
  t.equal(await app.prisma.uploadChunk.count({ where: { driveId: d.uuid } }), 6, 'the chunk sent twice is stored once')
  const again = await post(d.uuid, file, chunks[6])
  t.equal(again.statusCode, 200, 'a stored chunk sent again is 200 (idempotent)')
  t.equal(again.json().chunks_stored, 6)
  const mid = (await api.get(`/api/2.0/jobs/${d.jobs[0].uuid}/`)).json()
  t.equal(mid.data.bytes_done, 6 * MiB, 'the duplicate counts once')
  // the two last chunks together, the last of all also twice
  const ends = await Promise.all([chunks[4], chunks[7], chunks[7]].map(c => post(d.uuid, file, c)))
  for (const res of ends) t.equal(res.statusCode, 200, res.body)
  t.equal(ends.filter(r => r.json().complete).length >= 1, true)
  const job = await waitForJob(app, d.jobs[0].uuid)
  t.equal(job.state, 'success')
  t.equal(job.progress, 100)
  t.equal(Number(job.bytesDone), file.length, 'progress reached the total')
  t.equal(Number(job.bytesTotal), file.length)
  t.same(job.result, { sha256: sha256(file), bytes: file.length })
  const uploads = await app.prisma.job.findMany({ where: { operation: 'drive_upload', links: { some: { resourceId: d.uuid } } } })
  t.equal(uploads.length, 1, 'exactly one drive_upload job for the drive')
  t.equal(uploads[0].attempts, 1, 'which ran its handler once')
  t.equal((await api.get(`/api/2.0/drives/${d.uuid}/`)).json().status, 'unmounted')
  t.equal(sha256((await api.get(`/api/2.0/drives/${d.uuid}/download/`)).rawPayload), sha256(file))
})

t.test('exactly one of two last chunks arriving together sees the upload complete', async t => {
  const file = randomImage(4 * MiB)
  const d = await init(file.length)
  const chunks = chunksOf(file.length)
  for (const c of chunks.slice(0, 2)) t.equal((await post(d.uuid, file, c)).statusCode, 200)
  const ends = await Promise.all(chunks.slice(2).map(c => post(d.uuid, file, c)))
  t.same(ends.map(r => r.statusCode), [200, 200])
  t.equal(ends.filter(r => r.json().complete).length, 1, 'one completes the upload')
  const job = await waitForJob(app, d.jobs[0].uuid)
  t.equal(job.state, 'success')
  t.same(job.result, { sha256: sha256(file), bytes: file.length })
})

t.test('a chunk does not wait on the drive row for another chunk\'s lookup of it: the lookup share-locks the row, an update of the row waits for it', async t => {
  const file = randomImage(3 * MiB)
  const d = await init(file.length)
  const chunks = chunksOf(file.length)
  // what another chunk's lookup holds on the drive row while its statement runs
  const other = await lockRow(databaseUrl, 'drives', d.uuid, 'SHARE')
  t.teardown(other.release)
  const sent = post(d.uuid, file, chunks[1])
  const first = await Promise.race([sent.then(() => 'answered'), new Promise(resolve => setTimeout(resolve, 2000, 'waiting'))])
  await other.release()
  t.equal(first, 'answered', 'chunk 2 was stored meanwhile')
  t.match((await sent).json(), { chunk: 2, chunks_stored: 1, complete: false })
  // an update of the drive row waits for a lookup under way, and the lookup for it
  const change = await lockRow(databaseUrl, 'drives', d.uuid)
  t.teardown(change.release)
  const held = post(d.uuid, file, chunks[0])
  await eventually(async () => (await waitingForUs(change.client)) >= 1)
  t.ok(await claimed(d.uuid), 'the lookup is made under the chunk\'s claim (one lookup: no request writes the chunk between it and the write)')
  await change.release()
  t.equal((await held).statusCode, 200, 'and is then stored')
  t.equal((await post(d.uuid, file, chunks[2])).statusCode, 200)
  const job = await waitForJob(app, d.jobs[0].uuid)
  t.same(job.result, { sha256: sha256(file), bytes: file.length })
})

t.test('another account\'s POST to a drive holds none of its owner\'s chunk claims, even while its lookup waits; it is told 404', async t => {
  const file = randomImage(2 * MiB)
  const d = await init(file.length)
  const chunks = chunksOf(file.length)
  // alice sends chunk 1 with the §5.2 protocol, as her link allows
  const linked = await api.post(`/api/2.0/drives/${d.uuid}/action/?do=upload_chunk`, { chunk_number: 0, chunk_size: S })
  t.equal(linked.statusCode, 202, linked.body)
  // the drive row held: any lookup of it waits, holding the claim it took first
  const change = await lockRow(databaseUrl, 'drives', d.uuid)
  t.teardown(change.release)
  const foreign = post(d.uuid, file, chunks[0], { as: bob })
  await eventually(async () => (await waitingForUs(change.client)) >= 1)
  t.ok(await claimed(d.uuid, bob.id), 'bob\'s request claimed chunk 1 in his own name')
  t.notOk(await claimed(d.uuid), 'none of alice\'s claims of the drive is held: her chunks and her DELETE are not kept waiting by it')
  const mine = await app.inject({ method: 'POST', url: linked.json().link, headers: { 'content-type': 'application/octet-stream', accept: 'application/json' }, payload: file.subarray(chunks[0].start, chunks[0].end) })
  t.equal(mine.statusCode, 200, `meanwhile alice's chunk 1 is stored, not refused as being received (416, which clients skip): ${mine.body}`)
  await change.release()
  t.equal((await foreign).statusCode, 404, 'bob is told the drive does not exist')
  t.notOk(await claimed(d.uuid, bob.id), 'and his claim is let go')
  for (const c of chunks.slice(1)) t.equal((await post(d.uuid, file, c)).statusCode, 200)
  t.same((await waitForJob(app, d.jobs[0].uuid)).result, { sha256: sha256(file), bytes: file.length }, 'alice\'s upload is whole')
})

t.test('a resumableChunkSize that cuts the drive into more chunks than a chunk number counts (2^31 - 1) is 400 at resumableChunkSize, for GET and POST; nothing is stored or fixed', async t => {
  const size = 3 * 1024 ** 3
  const d = await init(size)
  const q = (n: number) => `/api/2.0/drives/${d.uuid}/upload/?resumableChunkNumber=${n}&resumableChunkSize=1&resumableTotalSize=${size}&resumableCurrentChunkSize=1`
  for (const n of [1, 3_000_000_001]) {
    const posted = await app.inject({ method: 'POST', url: q(n), headers: { authorization: alice.authorization, 'content-type': 'application/octet-stream' }, payload: Buffer.from([1]) })
    t.equal(posted.statusCode, 400, posted.body)
    t.match(JSON.parse(posted.body)[0], { error_type: 'validation', error_point: 'resumableChunkSize', error_message: 'Chunks of 1 bytes cut 3221225472 bytes into 3221225472 chunks; at most 2147483647 are allowed: use chunks of at least 2 bytes' })
    const asked = await api.get(q(n))
    t.equal(asked.statusCode, 400, asked.body)
    t.match(asked.json()[0], { error_point: 'resumableChunkSize' })
  }
  t.equal(await app.prisma.uploadChunk.count({ where: { driveId: d.uuid } }), 0, 'no chunk was stored')
  t.notOk(((await app.prisma.job.findUniqueOrThrow({ where: { id: d.jobs[0].uuid } })).params as { chunkSize?: number } | null)?.chunkSize, 'and the upload\'s chunk size is not fixed')
  // the smallest chunk size that fits: 1,610,612,736 chunks of 2 bytes, the last one's number past 999,999,999
  const last = `/api/2.0/drives/${d.uuid}/upload/?resumableChunkNumber=1610612736&resumableChunkSize=2&resumableTotalSize=${size}&resumableCurrentChunkSize=2`
  const stored = await app.inject({ method: 'POST', url: last, headers: { authorization: alice.authorization, 'content-type': 'application/octet-stream' }, payload: Buffer.from([7, 9]) })
  t.equal(stored.statusCode, 200, stored.body)
  t.equal(await app.prisma.uploadChunk.count({ where: { driveId: d.uuid, number: 1_610_612_735 } }), 1, 'the last chunk is stored')
  t.equal((await api.get(last)).statusCode, 200, 'and found by a GET')
})

t.test('a file smaller than the chunk size is one chunk; the raw "octet" method works too', async t => {
  const file = randomImage(1000)
  const d = await init(file.length)
  const [only] = chunksOf(file.length)
  t.same(only, { number: 1, start: 0, end: 1000 })
  t.equal((await test(d.uuid, file, only)).statusCode, 404)
  const res = await app.inject({
    method: 'POST',
    url: url(d.uuid, params(file, only)),
    headers: { authorization: alice.authorization, 'content-type': 'application/octet-stream' },
    payload: file
  })
  t.equal(res.statusCode, 200, res.body)
  t.match(res.json(), { chunk: 1, bytes: 1000, complete: true })
  const job = await waitForJob(app, d.jobs[0].uuid)
  t.same(job.result, { sha256: sha256(file), bytes: 1000 })
})

t.test('a chunk of the wrong length is 400 and nothing is recorded', async t => {
  const file = randomImage(2 * MiB + 10)
  const d = await init(file.length)
  const [c1, c2] = chunksOf(file.length)
  const short = await post(d.uuid, file, c2, { bytes: file.subarray(c2.start, c2.end - 1) })
  t.equal(short.statusCode, 400, short.body)
  t.equal(short.json()[0].error_point, 'file')
  const long = await post(d.uuid, file, c1, { bytes: file.subarray(0, MiB + 1) })
  t.equal(long.statusCode, 400, long.body)
  t.equal(long.json()[0].error_point, 'file')
  const declared = await post(d.uuid, file, c2, { over: { resumableCurrentChunkSize: MiB } })
  t.equal(declared.statusCode, 400, 'the last chunk declared as S bytes, not the remainder')
  t.equal(declared.json()[0].error_point, 'resumableCurrentChunkSize')
  t.equal(await app.prisma.uploadChunk.count({ where: { driveId: d.uuid } }), 0, 'no chunk recorded')
  t.equal((await test(d.uuid, file, c2)).statusCode, 404)

  const outside = await post(d.uuid, file, { number: 3, start: 0, end: 10 })
  t.equal(outside.statusCode, 400)
  t.equal(outside.json()[0].error_point, 'resumableChunkNumber')
  const zero = await api.get(url(d.uuid, params(file, c1, S, { resumableChunkNumber: 0 })))
  t.equal(zero.statusCode, 400, 'chunks count from 1')
  const count = await post(d.uuid, file, c1, { over: { resumableTotalChunks: 3 } })
  t.equal(count.json()[0].error_point, 'resumableTotalChunks')

  t.equal((await post(d.uuid, file, c1)).statusCode, 200, 'the right bytes then work')
  const other = await post(d.uuid, file, { number: 1, start: 0, end: 2 * MiB + 10 }, { chunkSize: 2 * MiB })
  t.equal(other.statusCode, 400, 'the chunk size is fixed by the first chunk')
  t.equal(other.json()[0].error_point, 'resumableChunkSize')
  const missing = await api.get(`/api/2.0/drives/${d.uuid}/upload/?resumableChunkSize=${S}&resumableTotalSize=${file.length}`)
  t.equal(missing.statusCode, 400)
  t.equal(missing.json()[0].error_point, 'resumableChunkNumber')
})

t.test('a form with two file parts is 400 "Send exactly one file" and stores nothing: the drive stays uploading', async t => {
  const file = Buffer.from('abcde')
  const d = await init(file.length)
  const [c1] = chunksOf(file.length, 5)
  const p = params(file, c1, 5)
  const form = new FormData()
  for (const [k, v] of p) form.append(k, v)
  form.append('file', new Blob([file]), 'f5')
  form.append('file', new Blob([Buffer.from('fghij')]), 'g5')
  const req = new Request('http://localhost/', { method: 'POST', body: form })
  const res = await app.inject({
    method: 'POST',
    url: `/api/2.0/drives/${d.uuid}/upload/`,
    headers: { authorization: alice.authorization, 'content-type': req.headers.get('content-type')! },
    payload: Buffer.from(await req.arrayBuffer())
  })
  t.equal(res.statusCode, 400, res.body)
  t.match(JSON.parse(res.body)[0], { error_type: 'validation', error_message: 'Send exactly one file', error_point: 'file' })
  t.equal(await app.prisma.uploadChunk.count({ where: { driveId: d.uuid } }), 0, 'no chunk recorded')
  t.equal((await api.get(`/api/2.0/drives/${d.uuid}/`)).json().status, 'uploading', 'the drive is still uploading')
  const job = await app.prisma.job.findUniqueOrThrow({ where: { id: d.jobs[0].uuid } })
  t.not(job.state, 'success', 'its job has not finished')
  const again = await post(d.uuid, file, c1, { chunkSize: 5 })
  t.equal(again.statusCode, 200, 'the chunk sent alone then works')
  t.equal(again.json().complete, true)
})

t.test("a total that is not the drive's size is 400 for GET and POST", async t => {
  const file = randomImage(2 * MiB)
  const d = await init(file.length + 1)
  const [c1] = chunksOf(file.length)
  const get = await test(d.uuid, file, c1)
  t.equal(get.statusCode, 400)
  t.equal(get.json()[0].error_point, 'resumableTotalSize')
  const res = await post(d.uuid, file, c1)
  t.equal(res.statusCode, 400)
  t.match(res.json()[0], { error_type: 'validation', error_point: 'resumableTotalSize' })
  t.equal(await app.prisma.uploadChunk.count({ where: { driveId: d.uuid } }), 0)
})

t.test('a drive that is not uploading takes no chunks (400 at status)', async t => {
  const res = await api.post('/api/2.0/drives/', { name: 'idle', size: MiB, media: 'disk' })
  const uuid = res.json().objects[0].uuid
  await waitForJob(app, res.json().objects[0].jobs[0].uuid)
  const file = randomImage(MiB)
  const [c1] = chunksOf(file.length)
  const up = await post(uuid, file, c1)
  t.equal(up.statusCode, 400)
  t.equal(up.json()[0].error_point, 'status')
})

t.test("another account gets 404 and cannot add chunks to alice's upload", async t => {
  const file = randomImage(2 * MiB)
  const d = await init(file.length)
  const [c1, c2] = chunksOf(file.length)
  t.equal((await post(d.uuid, file, c1)).statusCode, 200)
  t.equal((await test(d.uuid, file, c1, bobApi)).statusCode, 404, 'bob cannot see that chunk 1 is stored')
  const res = await post(d.uuid, file, c2, { as: bob })
  t.equal(res.statusCode, 404)
  t.equal(res.json()[0].error_type, 'notexist')
  t.equal(await app.prisma.uploadChunk.count({ where: { driveId: d.uuid } }), 1, 'bob stored nothing')
  const anonymous = await app.inject({ method: 'GET', url: url(d.uuid, params(file, c1)) })
  t.equal(anonymous.statusCode, 401, 'Basic auth is required')
})

t.test('the raw upload path beside it still routes to the raw upload, even for a drive named "upload"', async t => {
  const res = await app.inject({
    method: 'POST',
    url: '/api/2.0/drives/upload/upload/',
    headers: { authorization: alice.authorization, 'content-type': 'application/octet-stream' },
    payload: Buffer.alloc(10, 1)
  })
  t.equal(res.statusCode, 201, res.body)
  t.match((await api.get(`/api/2.0/drives/${res.body}/`)).json(), { name: 'upload', size: 10 })
})
