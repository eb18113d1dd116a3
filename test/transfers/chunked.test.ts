// Chunked, resumable upload (§5.2): initupload, upload_chunk links, chunks in any order and in
// parallel, 416 for a stored chunk, wrong sizes refused, resume after an interruption, expiry,
// another account's drive, an abandoned upload removed at its deadline, and the job's data.extra
// while it verifies and its description once done. Chunks sent in order are hashed as they arrive
// and the last one's request finishes the upload (shown on an app that runs no job handler); chunks
// out of order are read back into the running hash as the ones before them come in, and the last
// one's request still finishes it; only chunks received by two processes leave it to a worker.
import { Readable } from 'node:stream'
import pg from 'pg'
import t, { type Test } from 'tap'
import type { LocalDriveStorage } from '../../src/storage/index.ts'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { waitingForUs } from '../helpers/locks.ts'
import { lockRow } from '../helpers/db.ts'
import { waitForJob } from '../helpers/jobs.ts'
import { MiB, listen, movedMiB, randomImage, request, sha256 } from './helpers.ts'
import { recordSyncs } from '../helpers/syncs.ts'
import { CHANNELS } from '../../src/engine/listener.ts'

const { app, databaseUrl } = await buildTestApp(t)
const alice = await createUser(app)
const bob = await createUser(app)
const api = client(app, alice)
const bobApi = client(app, bob)

const S = MiB
const init = async (size: number, body: Record<string, unknown> = {}) => {
  const res = await api.post('/api/2.0/initupload/', { name: 'chunked', size, media: 'disk', ...body })
  if (res.statusCode !== 201) throw new Error(`initupload: ${res.statusCode} ${res.body}`)
  return res.json().objects[0]
}
const linkFor = (uuid: string, n: number, as = api) => as.post(`/api/2.0/drives/${uuid}/action/?do=upload_chunk`, { chunk_number: n, chunk_size: S })
const put = (link: string, data: Buffer) => app.inject({ method: 'POST', url: link, headers: { 'content-type': 'application/octet-stream', accept: 'application/json' }, payload: data })
const part = (data: Buffer, n: number, count: number) => data.subarray(n * S, n === count - 1 ? data.length : (n + 1) * S)

// an app that runs no job handler: whatever finishes an upload there is the chunk requests' own doing
// (every app is built before the first test: when the tests queued so far were done while a later
// await of this file still ran, tap ended the file's root test, and the tests after it could not start)
const quiet = await buildTestApp(t, { runWorkers: false, config: { storage: 'local' } })
const carol = await createUser(quiet.app)
const carolApi = client(quiet.app, carol)
const quietInit = async (size: number) => (await carolApi.post('/api/2.0/initupload/', { name: 'in order', size, media: 'disk' })).json().objects[0]
const quietLink = async (uuid: string, n: number) => (await carolApi.post(`/api/2.0/drives/${uuid}/action/?do=upload_chunk`, { chunk_number: n, chunk_size: S })).json().link as string
const quietPut = (link: string, payload: Buffer | Readable) => quiet.app.inject({ method: 'POST', url: link, headers: { 'content-type': 'application/octet-stream', accept: 'application/json' }, payload })
// a second process of the quiet app's cloud: the same database and drives
const quietToo = await buildTestApp(t, { runWorkers: false, databaseUrl: quiet.databaseUrl, config: { storage: 'local', drivesDir: quiet.app.config.drivesDir } })
const quietTooPut = (link: string, payload: Buffer) => quietToo.app.inject({ method: 'POST', url: link, headers: { 'content-type': 'application/octet-stream', accept: 'application/json' }, payload })
// and of the app with workers
const appToo = await buildTestApp(t, { runWorkers: false, databaseUrl, config: { drivesDir: app.config.drivesDir } })
const putToo = (link: string, data: Buffer) => appToo.app.inject({ method: 'POST', url: link, headers: { 'content-type': 'application/octet-stream', accept: 'application/json' }, payload: data })

t.test('initupload: the drive is uploading with the exact size; its job is started', async t => {
  const d = await init(3 * MiB + 123)
  t.equal(d.status, 'uploading')
  t.equal(d.size, 3 * MiB + 123)
  const bare = await api.post('/api/2.0/initupload/', { objects: [{ name: 'wrapped', size: 10, media: 'cdrom' }] })
  t.equal(bare.statusCode, 201, 'the {"objects": [...]} form works too')
  t.equal(bare.json().objects[0].media, 'cdrom')
  const job = (await api.get(`/api/2.0/jobs/${d.jobs[0].uuid}/`)).json()
  t.match(job, { operation: 'drive_upload', state: 'started' })
  t.equal((await app.storage.stat(d.uuid)).size, 3 * MiB + 123, 'a sparse image of the full size exists')
})

t.test('initupload refuses a storage_type a drive cannot have: 400 naming it, nothing made', async t => {
  const before = await app.prisma.drive.count({ where: { ownerId: alice.id } })
  const res = await api.post('/api/2.0/initupload/', { name: 'odd', size: MiB, media: 'disk', storage_type: 'floppy' })
  t.equal(res.statusCode, 400, res.body)
  t.match(res.json()[0], { error_type: 'validation', error_point: /storage_type/ })
  t.equal(await app.prisma.drive.count({ where: { ownerId: alice.id } }), before, 'no drive was made')
  const ok = await init(MiB, { storage_type: 'magnetic' })
  t.equal(ok.storage_type, 'magnetic', 'one it can have is kept')
})

t.test('chunks in any order and in parallel; 416 for a stored chunk; the drive ends unmounted', async t => {
  const data = randomImage(5 * MiB + 1000) // chunks 0..3 of 1 MiB, chunk 4 of 1 MiB + 1000
  const count = 5
  const d = await init(data.length)
  const order = [3, 0, 4, 1]
  await Promise.all(order.map(async n => {
    const res = await linkFor(d.uuid, n)
    t.equal(res.statusCode, 202, res.body)
    const link = res.json().link
    t.match(link, /^\/api\/2\.0\/uploads\/[A-Za-z0-9_-]{43}\/$/, 'a relative link with a token')
    const up = await put(link, part(data, n, count))
    t.equal(up.statusCode, 200, up.body)
  }))
  const again = await linkFor(d.uuid, 3)
  t.equal(again.statusCode, 416)
  t.match(again.json()[0].error_message, /3.*already uploaded/, 'the message names the chunk and says already uploaded')
  const mid = (await api.get(`/api/2.0/jobs/${d.jobs[0].uuid}/`)).json()
  t.equal(mid.state, 'started', 'the job stays started while a chunk is missing')
  t.equal(mid.data.bytes_done, 4 * MiB + MiB + 1000 - MiB, 'progress counts the bytes received')
  t.equal((await api.get(`/api/2.0/drives/${d.uuid}/`)).json().status, 'uploading')

  const last = (await linkFor(d.uuid, 2)).json().link
  const res = await put(last, part(data, 2, count))
  t.match(res.json(), { chunk: 2, complete: true, chunks_stored: 5, chunks_total: 5 })
  const job = await waitForJob(app, d.jobs[0].uuid)
  t.equal(job.state, 'success')
  t.same(job.result, { sha256: sha256(data), bytes: data.length }, 'the result holds the sha256 of the assembled image')
  t.equal((await api.get(`/api/2.0/drives/${d.uuid}/`)).json().status, 'unmounted')
  const dl = await api.get(`/api/2.0/drives/${d.uuid}/download/`)
  t.ok(dl.rawPayload.equals(data), 'the download is identical to the file')
  t.equal((await linkFor(d.uuid, 0)).statusCode, 400, 'no links once the drive is no longer uploading')
})

t.test('chunks received in order are hashed as they arrive, and the last one\'s request finishes the upload: no worker reads the image again', async t => {
  const data = randomImage(3 * MiB + 7)
  const d = await quietInit(data.length)
  const jobId = d.jobs[0].uuid
  const jobEvents = () => quiet.app.prisma.event.count({ where: { resourceType: 'jobs', resourceId: jobId } })
  const added: number[] = []
  for (let n = 0; n < 2; n++) {
    const before = await jobEvents()
    t.equal((await quietPut(await quietLink(d.uuid, n), part(data, n, 3))).statusCode, 200)
    added.push(await jobEvents() - before)
  }
  const before = await jobEvents()
  const last = await quietPut(await quietLink(d.uuid, 2), part(data, 2, 3))
  added.push(await jobEvents() - before)
  t.match(last.json(), { chunk: 2, complete: true, chunks_stored: 3, chunks_total: 3 })
  t.same(added, [1, 1, 1], 'one change event of the job per chunk: its progress, then its success (not its progress too)')
  // no worker runs in this app: the job is over when the last chunk's answer arrives
  const job = (await carolApi.get(`/api/2.0/jobs/${jobId}/`)).json()
  t.equal(job.state, 'success', 'the job succeeded in the request that stored the last chunk')
  t.equal(job.data.progress, 100)
  t.equal(job.data.description, 'received 3.0 MiB in 3 chunks')
  const row = await quiet.app.prisma.job.findUniqueOrThrow({ where: { id: jobId } })
  t.same(row.result, { sha256: sha256(data), bytes: data.length }, 'the sha256 of the assembled image')
  t.equal((await carolApi.get(`/api/2.0/drives/${d.uuid}/`)).json().status, 'unmounted')
  t.equal(await quiet.app.prisma.uploadChunk.count({ where: { driveId: d.uuid } }), 0, 'the chunk rows are gone with the upload')
  const log = (await carolApi.get(`/api/2.0/jobs/${jobId}/log/`)).body
  t.match(log, /all 3 chunks received; their sha256 was computed as they arrived, in order/, 'the job says so')
  t.match(log, /time split: 3 chunks in \d+ ms from the first chunk's request; in the chunk requests \(summed\): lookups \d+ ms, receive \d+ ms \(of which hash \d+ ms; \d+ ms hashing on a worker thread meanwhile, 0 B of the bodies handed to it without a copy\), fsync \d+ ms; .*settle \d+ ms/, 'and where the time went (an injected request\'s buffers are the caller\'s: none moved)')
  t.notMatch(log, /hashing the image/, 'and did not read the image to hash it')
  t.ok((await carolApi.get(`/api/2.0/drives/${d.uuid}/download/`)).rawPayload.equals(data), 'the image is the file')
})

t.test('chunks over real sockets, in order: their stored reads move to the hash worker instead of being copied; the sha256 is the image\'s', async t => {
  const base = await listen(quiet.app)
  const data = randomImage(3 * MiB + 7)
  const d = await quietInit(data.length)
  for (let n = 0; n < 3; n++) {
    const body = part(data, n, 3)
    const res = await request(`${base}${await quietLink(d.uuid, n)}`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'content-length': String(body.length) }, body })
    t.equal(res.status, 200, res.body.toString())
  }
  const row = await quiet.app.prisma.job.findUniqueOrThrow({ where: { id: d.jobs[0].uuid } })
  t.equal(row.state, 'success', 'finished by the last chunk\'s request')
  t.same(row.result, { sha256: sha256(data), bytes: data.length }, 'the sha256 of the assembled image')
  t.ok((await carolApi.get(`/api/2.0/drives/${d.uuid}/download/`)).rawPayload.equals(data), 'the image is the file')
  // this app's drives are local files, whatever STORAGE says
  const moved = await movedMiB(carolApi, d.jobs[0].uuid)
  t.ok(moved >= 2, `${moved} MiB of 3 moved without a copy (each chunk's reads that also held its headers are copied)`)
})

t.test('a chunk that fails midway leaves the running hash as it was: its retry continues the in-order run', async t => {
  const data = randomImage(3 * MiB + 11)
  const d = await quietInit(data.length)
  t.equal((await quietPut(await quietLink(d.uuid, 0), part(data, 0, 3))).statusCode, 200)
  const link = await quietLink(d.uuid, 1)
  // half of chunk 1 and other bytes, with no Content-Length: hashed into the chunk's fork, then refused
  const short = await quietPut(link, Readable.from([randomImage(MiB / 2)]))
  t.equal(short.statusCode, 400, short.body)
  t.equal(await quiet.app.prisma.uploadChunk.count({ where: { driveId: d.uuid } }), 1, 'the failed chunk is not recorded')
  t.equal((await quietPut(link, part(data, 1, 3))).statusCode, 200, 'the same link then takes the right bytes')
  t.equal((await quietPut(await quietLink(d.uuid, 2), part(data, 2, 3))).statusCode, 200)
  const row = await quiet.app.prisma.job.findUniqueOrThrow({ where: { id: d.jobs[0].uuid } })
  t.equal(row.state, 'success', 'finished by the last chunk\'s request: the run went on after the failed chunk')
  t.same(row.result, { sha256: sha256(data), bytes: data.length }, 'the failed chunk\'s bytes are not in the digest')
})

t.test('every chunk is on disk before it is acknowledged: its image was fsynced when the answer arrives', async t => {
  const data = randomImage(3 * MiB + 1)
  const d = await quietInit(data.length)
  const image = (quiet.app.storage as LocalDriveStorage).path(d.uuid)
  // the fsyncs (and background fdatasyncs) of the image that completed, in order
  const done = await recordSyncs(t, file => file === image)
  for (let n = 0; n < 3; n++) {
    const link = await quietLink(d.uuid, n)
    done.length = 0
    const res = await quietPut(link, part(data, n, 3))
    t.equal(res.statusCode, 200)
    t.equal(done.at(-1), 'fsync', `chunk ${n}: an fsync of the image ended before the answer (${done.join(', ')})`)
  }
})

t.test('chunks out of order, even three at a time, are read back into the running hash as the ones before them come in; the last one\'s request finishes the upload', async t => {
  const data = randomImage(4 * MiB + 11)
  const d = await quietInit(data.length)
  const jobId = d.jobs[0].uuid
  // 1 and 2 first: recorded ahead of the running hash, which has nothing yet
  await Promise.all([1, 2].map(async n => { t.equal((await quietPut(await quietLink(d.uuid, n), part(data, n, 4))).statusCode, 200) }))
  // 0 is hashed on its way in; once recorded, 1 and 2 are read back after it
  t.match((await quietPut(await quietLink(d.uuid, 0), part(data, 0, 4))).json(), { complete: false, chunks_stored: 3 })
  const last = await quietPut(await quietLink(d.uuid, 3), part(data, 3, 4))
  t.match(last.json(), { chunk: 3, complete: true })
  // no worker runs in this app
  const job = (await carolApi.get(`/api/2.0/jobs/${jobId}/`)).json()
  t.equal(job.state, 'success', 'the job succeeded in the request that stored the last chunk')
  t.same((await quiet.app.prisma.job.findUniqueOrThrow({ where: { id: jobId } })).result, { sha256: sha256(data), bytes: data.length }, 'the sha256 of the image, in its order')
  const log = (await carolApi.get(`/api/2.0/jobs/${jobId}/log/`)).body
  // 3 itself was read back by its request when the read-back of 1 and 2 was still under way at its start
  t.match(log, /all 4 chunks received; their sha256 was computed as they arrived, on a worker thread, the [23] that arrived out of order read back from the image: 2 as the chunks before them came in, [01] by the last chunk's request: [0-9a-f]{64}/, 'the job says which were read back, and when')
  t.notMatch(log, /hashing the image/, 'and did not read the whole image to hash it')

  // the last chunk first, then the rest three at a time (as resumable.js sends them)
  const more = randomImage(6 * MiB + 5)
  const m = await quietInit(more.length)
  t.equal((await quietPut(await quietLink(m.uuid, 5), part(more, 5, 6))).statusCode, 200)
  const queue = [0, 1, 2, 3, 4]
  await Promise.all([0, 1, 2].map(async () => {
    for (let n = queue.shift(); n !== undefined; n = queue.shift()) t.equal((await quietPut(await quietLink(m.uuid, n), part(more, n, 6))).statusCode, 200)
  }))
  const done = (await carolApi.get(`/api/2.0/jobs/${m.jobs[0].uuid}/`)).json()
  t.equal(done.state, 'success', 'finished by the request that stored the last chunk to arrive')
  t.same(done.result, { sha256: sha256(more), bytes: more.length })
  t.ok((await carolApi.get(`/api/2.0/drives/${m.uuid}/download/`)).rawPayload.equals(more), 'the image is the file')
})

t.test('past CHUNK_READ_BACK_MAX the last chunk\'s request reads nothing back: the upload is left to a worker', async t => {
  // a process of the quiet app's cloud that reads back at most 2 MiB in a last chunk's request
  const bounded = await buildTestApp(t, { runWorkers: false, databaseUrl: quiet.databaseUrl, config: { storage: 'local', drivesDir: quiet.app.config.drivesDir, chunkReadBackMaxBytes: 2 * MiB } })
  const boundedPut = (link: string, payload: Buffer) => bounded.app.inject({ method: 'POST', url: link, headers: { 'content-type': 'application/octet-stream', accept: 'application/json' }, payload })
  const data = randomImage(4 * MiB + 1)
  const d = await quietInit(data.length)
  // 1, 2 and 3 wait for 0, which comes last: 3 MiB to read back
  for (const n of [1, 2, 3]) t.equal((await boundedPut(await quietLink(d.uuid, n), part(data, n, 4))).statusCode, 200)
  t.match((await boundedPut(await quietLink(d.uuid, 0), part(data, 0, 4))).json(), { complete: true })
  const row = await quiet.app.prisma.job.findUniqueOrThrow({ where: { id: d.jobs[0].uuid } })
  t.match(row, { state: 'started', lockedBy: null, description: 'all chunks received; verifying the image' }, 'the job is due for a worker, which reads the image')

  // within the bound, the same process finishes it
  const small = randomImage(3 * MiB)
  const s = await quietInit(small.length)
  for (const n of [1, 2, 0]) t.equal((await boundedPut(await quietLink(s.uuid, n), part(small, n, 3))).statusCode, 200)
  t.equal((await carolApi.get(`/api/2.0/jobs/${s.jobs[0].uuid}/`)).json().state, 'success', '2 MiB read back: finished in the request')
})

t.test('a last chunk that arrives while the read-back of those before it is still under way waits for it outside its transaction, then finishes the upload itself (past CHUNK_READ_BACK_MAX it was left to a worker)', async t => {
  const bounded = await buildTestApp(t, { runWorkers: false, databaseUrl: quiet.databaseUrl, config: { storage: 'local', drivesDir: quiet.app.config.drivesDir, chunkReadBackMaxBytes: 2 * MiB } })
  const boundedPut = (link: string, payload: Buffer) => bounded.app.inject({ method: 'POST', url: link, headers: { 'content-type': 'application/octet-stream', accept: 'application/json' }, payload })
  const data = randomImage(6 * MiB + 1)
  const d = await quietInit(data.length)
  const jobId = d.jobs[0].uuid
  // the read-back of this drive's image (the real file) holds until the test lets it go
  const storage = bounded.app.storage as LocalDriveStorage
  const openForRead = storage.openForRead.bind(storage)
  let opened!: () => void
  const reading = new Promise<void>(resolve => { opened = resolve })
  let letGo!: () => void
  const gate = new Promise<void>(resolve => { letGo = resolve })
  storage.openForRead = async (id: string) => {
    if (id === d.uuid) { opened(); await gate }
    return openForRead(id)
  }
  t.teardown(() => { letGo(); storage.openForRead = openForRead })
  // 1 to 4 wait for 0; once 0 is recorded they are read back in the background: 4 MiB, held
  for (const n of [1, 2, 3, 4]) t.equal((await boundedPut(await quietLink(d.uuid, n), part(data, n, 6))).statusCode, 200)
  t.match((await boundedPut(await quietLink(d.uuid, 0), part(data, 0, 6))).json(), { complete: false, chunks_stored: 5 })
  await reading
  // 5, the last: every other chunk went through this process, and 5 MiB of them are not in the running hash yet
  const last = boundedPut(await quietLink(d.uuid, 5), part(data, 5, 6))
  const early = await Promise.race([last.then(() => 'answered'), new Promise(resolve => setTimeout(resolve, 500, 'waiting'))])
  t.equal(early, 'waiting', 'the last chunk\'s request waits for the read-back under way')
  t.equal(await quiet.app.prisma.uploadChunk.count({ where: { driveId: d.uuid } }), 5, 'before its record')
  await t.resolves(quiet.app.prisma.$transaction(async (tx) => tx.$queryRaw`SELECT 1 FROM jobs WHERE id = ${jobId}::uuid FOR UPDATE NOWAIT`), 'holding no lock on the job row meanwhile')
  letGo()
  t.match((await last).json(), { chunk: 5, complete: true })
  const row = await quiet.app.prisma.job.findUniqueOrThrow({ where: { id: jobId } })
  t.equal(row.state, 'success', 'the job succeeded in the request that stored the last chunk: no worker reads the image')
  t.same(row.result, { sha256: sha256(data), bytes: data.length }, 'the sha256 of the image, in its order')
  const log = (await carolApi.get(`/api/2.0/jobs/${jobId}/log/`)).body
  t.match(log, /all 6 chunks received; their sha256 was computed as they arrived, on a worker thread, the 5 that arrived out of order read back from the image: 4 as the chunks before them came in, 1 by the last chunk's request: [0-9a-f]{64}/, 'the job says which were read back, and when')
  t.ok((await carolApi.get(`/api/2.0/drives/${d.uuid}/download/`)).rawPayload.equals(data), 'the image is the file')
})

t.test('a chunk size that cuts the drive into more chunks than a chunk number counts (2^31 - 1) is 400 at chunk_size, whatever the chunk number; no link is written', async t => {
  const size = 3 * 1024 ** 3
  const d = await quietInit(size)
  const ask = (n: number, chunkSize: number) => carolApi.post(`/api/2.0/drives/${d.uuid}/action/?do=upload_chunk`, { chunk_number: n, chunk_size: chunkSize })
  for (const n of [0, 3_000_000_000]) {
    const res = await ask(n, 1)
    t.equal(res.statusCode, 400, res.body)
    t.match(res.json()[0], { error_type: 'validation', error_point: 'chunk_size', error_message: 'Chunks of 1 bytes cut 3221225472 bytes into 3221225472 chunks; at most 2147483647 are allowed: use chunks of at least 2 bytes' })
  }
  t.equal(await quiet.app.prisma.transferLink.count({ where: { driveId: d.uuid } }), 0, 'no link was written')
  t.notOk(((await quiet.app.prisma.job.findUniqueOrThrow({ where: { id: d.jobs[0].uuid } })).params as { chunkSize?: number } | null)?.chunkSize, 'and the upload\'s chunk size is not fixed')
  // the smallest chunk size that fits: 1,610,612,736 chunks of 2 bytes; a link to the last one
  const last = await ask(1_610_612_735, 2)
  t.equal(last.statusCode, 202, last.body)
  t.equal((await ask(1_610_612_736, 2)).statusCode, 400, 'one past it is out of range')
  // a chunk number past 999,999,999 is claimed like any other (a claim's member is an int)
  const stored = await quietPut(last.json().link, Buffer.from([7, 9]))
  t.equal(stored.statusCode, 200, stored.body)
  t.match(stored.json(), { chunk: 1_610_612_735, bytes: 2, chunks_stored: 1, chunks_total: 1_610_612_736, complete: false })
  t.equal(await quiet.app.prisma.uploadChunk.count({ where: { driveId: d.uuid, number: 1_610_612_735 } }), 1, 'the chunk is recorded')
  const reader = await quiet.app.storage.openForRead!(d.uuid)
  t.teardown(() => reader.close())
  const at = Buffer.alloc(2)
  t.equal(await reader.read(at, 2, size - 2), 2)
  t.same([...at], [7, 9], 'at its offset, the image\'s last two bytes')
})

t.test('chunks received by two processes: the upload is left to a worker, the job due, not finished, when the last chunk is stored', async t => {
  const data = randomImage(2 * MiB + 3)
  const d = await quietInit(data.length)
  // the NOTIFY that wakes a worker at once (it would otherwise find the job due at its next look)
  const listener = new pg.Client({ connectionString: quiet.databaseUrl })
  await listener.connect()
  t.teardown(() => listener.end())
  const woken: string[] = []
  listener.on('notification', (m) => { if (m.channel === CHANNELS.jobs) woken.push(m.payload ?? '') })
  await listener.query(`LISTEN ${CHANNELS.jobs}`)
  const jobEvents = () => quiet.app.prisma.event.count({ where: { resourceType: 'jobs', resourceId: d.jobs[0].uuid } })
  const before = await jobEvents()
  // neither process holds every chunk: neither can know the image's sha256
  t.equal((await quietTooPut(await quietLink(d.uuid, 1), part(data, 1, 2))).statusCode, 200)
  t.match((await quietPut(await quietLink(d.uuid, 0), part(data, 0, 2))).json(), { complete: true })
  t.equal(await jobEvents() - before, 2, 'one change event of the job per chunk')
  await eventually(async () => woken.includes(d.jobs[0].uuid))
  t.same(woken, [d.jobs[0].uuid], 'the last chunk woke the workers for the job, once')
  const row = await quiet.app.prisma.job.findUniqueOrThrow({ where: { id: d.jobs[0].uuid } })
  t.equal(row.state, 'started')
  t.equal(row.lockedBy, null, 'no request holds it')
  t.ok(row.runAt.getTime() <= Date.now(), 'it is due: a worker hashes the image and finishes it')
  t.equal(row.description, 'all chunks received; verifying the image')
  t.match(row.params, { timing: { chunks: 2 } }, 'the chunks left their time split for the job')
})

t.test('while the image is verified the job shows data.extra {phase: hash}; once done it says what it received', async t => {
  const data = randomImage(2 * MiB + 5)
  const d = await init(data.length)
  const jobId = d.jobs[0].uuid
  // the last chunk through another process: this one has no running hash of it, so the job reads the image to hash it
  t.equal((await putToo((await linkFor(d.uuid, 1)).json().link, part(data, 1, 2))).statusCode, 200)
  const last = (await linkFor(d.uuid, 0)).json().link
  // the upload ends by writing the drive row: a lock on it holds the job after its hash, however fast
  const lock = await lockRow(databaseUrl, 'drives', d.uuid)
  t.teardown(lock.release)
  t.equal((await put(last, part(data, 0, 2))).statusCode, 200)
  const running = await eventually(async () => {
    const j = (await api.get(`/api/2.0/jobs/${jobId}/`)).json()
    if (j.state !== 'started') throw new Error(`the job is ${j.state}`)
    return j.data.extra?.phase === 'hash' ? j : undefined
  }, { timeoutMs: 20_000, intervalMs: 20 }).catch(async (err: unknown) => { await lock.release(); throw err })
  t.same(running.data.extra, { phase: 'hash' }, 'data.extra names the step')
  t.equal(running.data.description, 'all chunks received; computing the SHA-256 of the image')
  await lock.release()
  t.equal((await waitForJob(app, jobId)).state, 'success')
  const done = (await api.get(`/api/2.0/jobs/${jobId}/`)).json()
  t.same(done.data.extra, { phase: 'done' })
  t.match(done.data.description, /^received 2\.0 MiB in 2 chunks; hashed in \d+\.\d s$/, 'what was done, not the last step')
  t.same((await waitForJob(app, jobId)).result, { sha256: sha256(data), bytes: data.length }, 'the sha256 read back from the image')
})

t.test('a chunk uploaded twice through the same link is 416 the second time', async t => {
  const data = randomImage(2 * MiB)
  const d = await init(data.length)
  const link = (await linkFor(d.uuid, 0)).json().link
  t.equal((await put(link, part(data, 0, 2))).statusCode, 200)
  const twice = await put(link, part(data, 0, 2))
  t.equal(twice.statusCode, 416)
  t.match(twice.json()[0].error_message, /Chunk 0 already uploaded/)
})

t.test('a chunk of the wrong size is refused and nothing is recorded', async t => {
  const data = randomImage(2 * MiB)
  const d = await init(data.length)
  const link = (await linkFor(d.uuid, 1)).json().link
  const short = await put(link, data.subarray(0, 1000))
  t.equal(short.statusCode, 400)
  const long = await put(link, Buffer.concat([part(data, 1, 2), Buffer.alloc(1)]))
  t.equal(long.statusCode, 400)
  t.equal(await app.prisma.uploadChunk.count({ where: { driveId: d.uuid } }), 0, 'no chunk recorded')
  t.equal((await put(link, part(data, 1, 2))).statusCode, 200, 'the same link then works with the right bytes')
  const other = await api.post(`/api/2.0/drives/${d.uuid}/action/?do=upload_chunk`, { chunk_number: 0, chunk_size: 2 * S })
  t.equal(other.statusCode, 400, 'the chunk size is fixed by the first link')
  const outside = await linkFor(d.uuid, 2)
  t.equal(outside.statusCode, 400)
  t.equal(outside.json()[0].error_point, 'chunk_number')
})

t.test('first links that race: the one that fixes the chunk size wins, the links of that size that waited for it are written, another size is 400', async t => {
  const data = randomImage(4 * MiB)
  const d = await init(data.length)
  const jobId = d.jobs[0].uuid
  // another first link's fix, not yet committed: the links below wait on the job's row for it,
  // and their statements' snapshots cannot see it once they go on (waiters are counted in
  // pg_locks: see helpers/locks.ts)
  const c = new pg.Client({ connectionString: databaseUrl })
  await c.connect()
  t.teardown(() => c.end().catch(() => {}))
  await c.query('BEGIN')
  await c.query('UPDATE jobs SET params = params || jsonb_build_object(\'chunkSize\', $2::bigint) WHERE id = $1::uuid', [jobId, S])
  const asked = [0, 1, 2].map(n => linkFor(d.uuid, n))
  const otherSize = api.post(`/api/2.0/drives/${d.uuid}/action/?do=upload_chunk`, { chunk_number: 0, chunk_size: 2 * S })
  await eventually(async () => await waitingForUs(c) >= 4 || undefined)
  await c.query('COMMIT')
  const links = await Promise.all(asked)
  t.same(links.map(r => r.statusCode), [202, 202, 202], links.map(r => r.body).join(' '))
  const other = await otherSize
  t.equal(other.statusCode, 400, other.body)
  t.match(other.json()[0], { error_point: 'chunk_size', error_message: `This upload uses chunks of ${S} bytes; chunk_size must be ${S}` })
  for (const [n, r] of links.entries()) t.equal((await put(r.json().link, part(data, n, 4))).statusCode, 200, `chunk ${n} through its link`)
})

t.test('resuming an interrupted upload sends only what is missing', async t => {
  const data = randomImage(4 * MiB + 5)
  const count = 4
  const d = await init(data.length)
  // first session: chunks 0 and 2, then the client goes away
  for (const n of [0, 2]) await put((await linkFor(d.uuid, n)).json().link, part(data, n, count))
  // second session: like pycloudsigma, check the size, then ask for every chunk and skip 416s
  t.equal((await api.get(`/api/2.0/drives/${d.uuid}/`)).json().size, data.length)
  const sent: number[] = []
  for (let n = 0; n < count; n++) {
    const res = await linkFor(d.uuid, n)
    if (res.statusCode === 416) continue
    sent.push(n)
    t.equal((await put(res.json().link, part(data, n, count))).statusCode, 200)
  }
  t.same(sent, [1, 3], 'only the missing chunks were uploaded')
  const job = await waitForJob(app, d.jobs[0].uuid)
  t.same(job.result, { sha256: sha256(data), bytes: data.length })
  t.equal((await api.get(`/api/2.0/drives/${d.uuid}/`)).json().status, 'unmounted')
})

t.test('links expire (410), unknown links are 404, and need no credentials', async t => {
  const d = await init(2 * MiB)
  const link = (await linkFor(d.uuid, 0)).json().link
  await app.prisma.transferLink.updateMany({ where: { driveId: d.uuid }, data: { expiresAt: new Date(Date.now() - 1000) } })
  const res = await put(link, randomImage(MiB))
  t.equal(res.statusCode, 410)
  t.equal(await app.prisma.uploadChunk.count({ where: { driveId: d.uuid } }), 0)
  t.equal((await put('/api/2.0/uploads/' + 'A'.repeat(43) + '/', randomImage(MiB))).statusCode, 404)
  t.equal((await put('/api/2.0/uploads/short/', randomImage(10))).statusCode, 404)
  const row = await app.prisma.transferLink.findFirst({ where: { driveId: d.uuid } })
  t.match(row?.tokenHash, /^[0-9a-f]{64}$/, 'only the sha256 of the token is stored')
  t.notOk(link.includes(row!.tokenHash), 'the link does not carry the stored hash')
})

t.test("another account can neither get links for nor see alice's upload", async t => {
  const d = await init(2 * MiB)
  t.equal((await linkFor(d.uuid, 0, bobApi)).statusCode, 404)
  t.equal((await bobApi.get(`/api/2.0/drives/${d.uuid}/`)).statusCode, 404)
})

t.test('an upload abandoned past its deadline is removed, row and image', async t => {
  const d = await init(2 * MiB)
  await put((await linkFor(d.uuid, 0)).json().link, randomImage(MiB))
  await app.prisma.job.update({ where: { id: d.jobs[0].uuid }, data: { runAt: new Date(Date.now() - 1000) } })
  app.jobs.wake()
  const job = await waitForJob(app, d.jobs[0].uuid)
  t.equal(job.state, 'error')
  t.match(job.error, { error_message: /abandoned: 1 of 2 chunks/ })
  await eventually(async () => (await api.get(`/api/2.0/drives/${d.uuid}/`)).statusCode === 404)
  t.notOk(await app.storage.exists(d.uuid))
})

t.test('cancelling a chunked upload removes its drive', async t => {
  const d = await init(2 * MiB)
  const res = await api.post(`/api/2.0/jobs/${d.jobs[0].uuid}/action/?do=cancel`, {})
  t.equal(res.statusCode, 202, res.body)
  const job = await waitForJob(app, d.jobs[0].uuid)
  t.equal(job.state, 'cancelled')
  await eventually(async () => (await api.get(`/api/2.0/drives/${d.uuid}/`)).statusCode === 404)
})

// DELETE of a drive whose chunked upload was left idle: the user wants it gone, not a 503 until
// the upload's 24 h deadline. The upload is cancelled and its job's cleanup removes everything.
const lastEvent = async () => (await app.prisma.event.aggregate({ _max: { id: true } }))._max.id ?? 0n

async function assertUploadGone (t: Test, d: { uuid: string, jobs: Array<{ uuid: string }> }) {
  const job = await waitForJob(app, d.jobs[0].uuid)
  t.equal(job.state, 'cancelled', 'the upload job is cancelled, not left running')
  await eventually(async () => (await app.prisma.drive.findUnique({ where: { id: d.uuid } })) === null)
  t.notOk(await app.storage.exists(d.uuid), 'no image left')
  t.equal(await app.prisma.uploadChunk.count({ where: { driveId: d.uuid } }), 0, 'no chunk rows left')
  t.equal(await app.prisma.transferLink.count({ where: { driveId: d.uuid } }), 0, 'no chunk links left')
  t.equal(await app.prisma.job.count({ where: { operation: 'drive_delete', params: { path: ['driveId'], equals: d.uuid } } }), 0, 'the upload job removes it: no drive_delete job')
}

t.test('DELETE of a drive whose chunked upload is idle cancels the upload and removes the drive at once', async t => {
  const d = await init(2 * MiB)
  t.equal((await put((await linkFor(d.uuid, 0)).json().link, randomImage(MiB))).statusCode, 200)
  const unused = (await linkFor(d.uuid, 1)).json().link
  const before = await lastEvent()
  const res = await api.delete(`/api/2.0/drives/${d.uuid}/`)
  t.equal(res.statusCode, 204, res.body)
  t.equal((await api.get(`/api/2.0/drives/${d.uuid}/`)).statusCode, 404, 'gone from the API at once')
  t.notOk((await api.get('/api/2.0/drives/?limit=0')).json().objects.some((o: { uuid: string }) => o.uuid === d.uuid), 'and from the list')
  const late = await put(unused, randomImage(MiB))
  t.ok([404, 410].includes(late.statusCode), `a link of the upload no longer takes a chunk: ${late.statusCode}`)
  await assertUploadGone(t, d)
  const events = await app.prisma.event.findMany({ where: { id: { gt: before }, ownerId: alice.id } })
  t.ok(events.some(e => e.resourceType === 'drives' && e.resourceId === d.uuid), 'a drive event was published')
  t.ok(events.some(e => e.resourceType === 'jobs' && e.resourceId === d.jobs[0].uuid), 'a job event was published')
  const job = (await api.get(`/api/2.0/jobs/${d.jobs[0].uuid}/`)).json()
  t.equal(job.state, 'cancelled')
})

t.test('an idle upload with no chunk yet, and one in a bulk DELETE beside a ready drive, go the same way', async t => {
  const fresh = await init(3 * MiB)
  t.equal((await api.delete(`/api/2.0/drives/${fresh.uuid}/`)).statusCode, 204)
  await assertUploadGone(t, fresh)
  const idle = await init(2 * MiB)
  const ready = (await api.post('/api/2.0/drives/', { name: 'ready', size: MiB, media: 'disk' })).json().objects[0]
  await eventually(async () => (await api.get(`/api/2.0/drives/${ready.uuid}/`)).json().status === 'unmounted')
  const res = await api.delete('/api/2.0/drives/', { objects: [{ uuid: idle.uuid }, { uuid: ready.uuid }] })
  t.equal(res.statusCode, 204, res.body)
  await assertUploadGone(t, idle)
  await eventually(async () => (await app.prisma.drive.findUnique({ where: { id: ready.uuid } })) === null)
})

t.test('DELETE of an uploading drive whose upload is not idle is still 503, and changes nothing', async t => {
  const d = await init(2 * MiB)
  // a worker (or the last chunk's request) is finishing it: its job is leased
  await app.prisma.job.update({ where: { id: d.jobs[0].uuid }, data: { lockedBy: 'elsewhere', lockedUntil: new Date(Date.now() + 60_000) } })
  const res = await api.delete(`/api/2.0/drives/${d.uuid}/`)
  t.equal(res.statusCode, 503, res.body)
  t.equal(res.json()[0].error_type, 'concurrency')
  t.equal((await api.get(`/api/2.0/drives/${d.uuid}/`)).json().status, 'uploading', 'the drive is as it was')
  t.match(await app.prisma.job.findUnique({ where: { id: d.jobs[0].uuid } }), { state: 'started', cancelRequested: false })
  await app.prisma.job.update({ where: { id: d.jobs[0].uuid }, data: { lockedBy: null, lockedUntil: null } })
  t.equal((await api.delete(`/api/2.0/drives/${d.uuid}/`)).statusCode, 204, 'once it is idle again')
  await assertUploadGone(t, d)
})

t.test('a chunk that arrives while a DELETE holds the drive waits for it, then finds the upload over and writes nothing', async t => {
  const d = await init(2 * MiB)
  const link = (await linkFor(d.uuid, 0)).json().link
  // the drive row locked as deleteDrivesIn locks it, and the drive hidden in that transaction
  const c = new pg.Client({ connectionString: databaseUrl })
  await c.connect()
  t.teardown(() => c.end())
  await c.query('BEGIN')
  await c.query('SELECT id FROM drives WHERE id = $1::uuid FOR UPDATE', [d.uuid])
  await c.query('UPDATE drives SET deleted = true WHERE id = $1::uuid', [d.uuid])
  const chunk = put(link, randomImage(MiB))
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal((await app.storage.stat(d.uuid)).allocated, 0, 'nothing written while the DELETE is open')
  await c.query('COMMIT')
  const res = await chunk
  t.equal(res.statusCode, 410, res.body)
  t.equal(await app.prisma.uploadChunk.count({ where: { driveId: d.uuid } }), 0, 'no chunk recorded')
  t.equal((await app.storage.stat(d.uuid)).allocated, 0, 'no byte written')
  // what the DELETE would have done besides: cancel the upload, whose cleanup removes the drive
  t.equal((await api.post(`/api/2.0/jobs/${d.jobs[0].uuid}/action/?do=cancel`, {})).statusCode, 202)
  await waitForJob(app, d.jobs[0].uuid)
})
