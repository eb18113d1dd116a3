// A chunk is claimed across processes while a request writes it: two apps on one database and one
// drives folder (two service processes) never write the same chunk at once. A second request for a
// chunk another process is receiving is refused (§5.2: 416) or waits and answers it as stored
// (resumable.js); a request cut midway releases its claim.
import http from 'node:http'
import t from 'tap'
import { SessionLocks, memberName } from '../../src/db/session-locks.ts'
import { chunkClaimGroup } from '../../src/domain/chunks.ts'
import { transferDeps } from '../../src/features/transfers/service.ts'
import { recordChunk } from '../../src/features/transfers/upload-chunked.ts'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { waitForJob } from '../helpers/jobs.ts'
import { MiB, listen, randomImage, sha256 } from './helpers.ts'

const one = await buildTestApp(t)
// a second process of the same deployment: the same database and the same drive images
const two = await buildTestApp(t, { runWorkers: false, databaseUrl: one.databaseUrl, config: { drivesDir: one.config.drivesDir } })
const base = await listen(one.app)
const user = await createUser(one.app)
const api = client(one.app, user)
const apiTwo = client(two.app, user)

const S = 4 * MiB
const init = async (chunks = 2) => {
  const res = await api.post('/api/2.0/initupload/', { name: 'claims', size: chunks * S, media: 'disk' })
  if (res.statusCode !== 201) throw new Error(`initupload: ${res.statusCode} ${res.body}`)
  return res.json().objects[0] as { uuid: string, jobs: Array<{ uuid: string }> }
}
const linkFor = async (as: typeof api, uuid: string, n: number) => {
  const res = await as.post(`/api/2.0/drives/${uuid}/action/?do=upload_chunk`, { chunk_number: n, chunk_size: S })
  if (res.statusCode !== 202) throw new Error(`link: ${res.statusCode} ${res.body}`)
  return res.json().link as string
}
const put = (app: typeof one.app, link: string, data: Buffer) =>
  app.inject({ method: 'POST', url: link, headers: { 'content-type': 'application/octet-stream', accept: 'application/json' }, payload: data })

/** A chunk POSTed to app one over a real socket, its body held after `first` bytes. */
function slowChunk (link: string, first: Buffer) {
  let req!: http.ClientRequest
  const answer = new Promise<{ status: number, body: string }>((resolve, reject) => {
    req = http.request(base + link, { method: 'POST', agent: false, headers: { 'content-type': 'application/octet-stream', 'content-length': String(S), accept: 'application/json' } }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      res.on('error', reject)
    })
    req.on('error', reject)
  })
  req.write(first)
  return { req, answer }
}

/** Waits until bytes past chunk 0 (stored in full) reach the image: chunk 1 is being written by app one (random bytes: rbd stores no zeros). */
const chunk1Writing = (uuid: string) => eventually(async () => (await one.app.storage.stat(uuid)).allocated > S)

async function imageSha (uuid: string): Promise<string> {
  const parts: Buffer[] = []
  for await (const c of await one.app.storage.createReadStream(uuid)) parts.push(c as Buffer)
  return sha256(Buffer.concat(parts))
}

t.test('a chunk being received by one process is refused in another; the image is what the job says', async t => {
  const data = randomImage(2 * S)
  const d = await init()
  t.equal((await put(one.app, await linkFor(api, d.uuid, 0), data.subarray(0, S))).statusCode, 200)
  const linkA = await linkFor(api, d.uuid, 1)
  const linkB = await linkFor(apiTwo, d.uuid, 1)

  // app one receives chunk 1 (the right bytes), slowly: half of it, then its body is held
  const a = slowChunk(linkA, data.subarray(S, S + S / 2))
  await chunk1Writing(d.uuid)
  // app two gets the same chunk in full (other bytes): it must not write them
  const b = await put(two.app, linkB, Buffer.alloc(S))
  t.equal(b.statusCode, 416, `the other process refuses the chunk being received: ${b.body}`)
  t.match(b.json()[0].error_message, /already uploaded \(it is being received now\)/)

  a.req.end(data.subarray(S + S / 2))
  const done = await a.answer
  t.equal(done.status, 200, done.body)
  t.match(JSON.parse(done.body), { chunk: 1, complete: true })
  const job = await waitForJob(one.app, d.jobs[0].uuid)
  t.equal(job.state, 'success')
  t.same(job.result, { sha256: sha256(data), bytes: data.length }, "the job's sha256 is the uploaded file's")
  t.equal(await imageSha(d.uuid), sha256(data), "the image's sha256 is the job's")
})

t.test('a request cut midway releases its claim: the chunk is then received by the other process', async t => {
  const data = randomImage(2 * S)
  const d = await init()
  t.equal((await put(one.app, await linkFor(api, d.uuid, 0), data.subarray(0, S))).statusCode, 200)
  const a = slowChunk(await linkFor(api, d.uuid, 1), randomImage(S / 2))
  a.answer.catch(() => {})
  await chunk1Writing(d.uuid)
  const link = await linkFor(apiTwo, d.uuid, 1)
  t.equal((await put(two.app, link, data.subarray(S))).statusCode, 416, 'refused while app one writes it')
  a.req.destroy()
  // once app one has let the chunk go, app two stores it
  const b = await eventually(async () => {
    const res = await put(two.app, link, data.subarray(S))
    return res.statusCode === 200 ? res : undefined
  })
  t.match(b.json(), { chunk: 1, complete: true })
  const job = await waitForJob(one.app, d.jobs[0].uuid)
  t.same(job.result, { sha256: sha256(data), bytes: data.length })
  t.equal(await imageSha(d.uuid), sha256(data))
})

t.test('a receive whose claim connection fails is aborted (503); the chunk is then stored by the other process', async t => {
  const data = randomImage(2 * S)
  const d = await init()
  t.equal((await put(one.app, await linkFor(api, d.uuid, 0), data.subarray(0, S))).statusCode, 200)
  const a = slowChunk(await linkFor(api, d.uuid, 1), randomImage(S / 2))
  await chunk1Writing(d.uuid)
  // the backend of app one's claims connection: the one holding an advisory lock on this database
  const holders = await one.app.prisma.$queryRaw<Array<{ pid: number }>>`
    SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`
  t.equal(holders.length, 1, 'one claim is held')
  await one.app.prisma.$queryRaw`SELECT pg_terminate_backend(${holders[0].pid}::int)`
  const lost = await a.answer.catch((err: Error) => ({ status: 0, body: err.message }))
  t.equal(lost.status, 503, `app one stops writing a chunk it can no longer prove is its own: ${lost.body}`)
  const b = await put(two.app, await linkFor(apiTwo, d.uuid, 1), data.subarray(S))
  t.equal(b.statusCode, 200, b.body)
  t.equal((await waitForJob(one.app, d.jobs[0].uuid)).state, 'success')
  t.equal(await imageSha(d.uuid), sha256(data))
  // app one claims again on a new connection
  const d2 = await init()
  t.equal((await put(one.app, await linkFor(api, d2.uuid, 0), data.subarray(0, S))).statusCode, 200, 'a later chunk is claimed on a new connection')
})

t.test('resumable.js: a chunk another process is receiving is waited for, then answered as stored', async t => {
  const data = randomImage(3 * S)
  const d = await init(3)
  t.equal((await put(one.app, await linkFor(api, d.uuid, 0), data.subarray(0, S))).statusCode, 200)
  const a = slowChunk(await linkFor(api, d.uuid, 1), data.subarray(S, S + S / 2))
  await chunk1Writing(d.uuid)
  // resumable.js's octet mode: chunk 2 there is chunk 1 here
  const q = new URLSearchParams({ resumableChunkNumber: '2', resumableChunkSize: String(S), resumableTotalSize: String(3 * S), resumableCurrentChunkSize: String(S) })
  let settled = false
  const b = two.app.inject({
    method: 'POST',
    url: `/api/2.0/drives/${d.uuid}/upload/?${q.toString()}`,
    headers: { authorization: user.authorization, 'content-type': 'application/octet-stream' },
    payload: Buffer.alloc(S)
  }).then(res => { settled = true; return res })
  await new Promise(resolve => setTimeout(resolve, 600))
  t.notOk(settled, 'the resumable.js request waits while app one receives the chunk')
  a.req.end(data.subarray(S + S / 2, 2 * S))
  t.equal((await a.answer).status, 200)
  const res = await b
  t.equal(res.statusCode, 200, res.body)
  t.match(JSON.parse(res.body), { chunk: 2, chunks_stored: 2, complete: false })
  t.equal((await put(one.app, await linkFor(api, d.uuid, 2), data.subarray(2 * S))).statusCode, 200)
  const job = await waitForJob(one.app, d.jobs[0].uuid)
  t.same(job.result, { sha256: sha256(data), bytes: data.length })
  t.equal(await imageSha(d.uuid), sha256(data), 'its zeros were not written')
})

t.test('a chunk is recorded only while its claim is held at that moment: a claims connection that died unnoticed records nothing', async t => {
  const d = await init(2)
  const drive = { id: d.uuid, ownerId: user.id, size: 2 * S }
  const timing = { startedAt: Date.now(), lookupsMs: 0, receiveMs: 0, hashMs: 0, fsyncMs: 0, movedBytes: 0 }
  const record = (claim: { pid: number, name: string }) => recordChunk(transferDeps(one.app), drive, d.jobs[0].uuid, 0, S, S, 'refuse', { timing, claim, digest: async () => undefined })
  // no pings: a claims connection whose backend went away is noticed only by its own events
  const locks = new SessionLocks({ connectionString: one.databaseUrl }, { pingIntervalMs: 3_600_000 })
  t.teardown(() => locks.close())
  const lock = await locks.tryLock(memberName(chunkClaimGroup(user.id, d.uuid), 0))
  if (lock === undefined) throw new Error('not taken')
  const other = await locks.tryLock(memberName(chunkClaimGroup(user.id, d.uuid), 1))
  const refused = await record({ pid: lock.pid, name: memberName(chunkClaimGroup(user.id, d.uuid), 9) }).then(() => undefined, (e: unknown) => e)
  t.match(refused, { statusCode: 503, message: /connection that claimed it failed/ }, 'a claim this backend does not hold records nothing')
  t.equal(await one.app.prisma.uploadChunk.count({ where: { driveId: d.uuid } }), 0)
  await other?.release()
  const ok = await record(lock)
  t.match(ok, { chunk: 0, chunksStored: 1 }, 'a held claim records the chunk')
  await one.app.prisma.uploadChunk.deleteMany({ where: { driveId: d.uuid } })
  // the claims connection's backend ends; the holder's signal may not know yet, the statement does.
  // With a timeout, pg_terminate_backend waits until the backend has exited (and so let its locks
  // go); without one it only signals it, and the record below could run while the lock is held.
  const ended = await one.app.prisma.$queryRaw<Array<{ ended: boolean }>>`SELECT pg_terminate_backend(${lock.pid}::int, 10000) AS ended`
  t.equal(ended[0].ended, true, 'the claims backend has exited')
  const lost = await record(lock).then(() => undefined, (e: unknown) => e)
  t.match(lost, { statusCode: 503 }, 'a claim whose connection died records nothing')
  t.equal(await one.app.prisma.uploadChunk.count({ where: { driveId: d.uuid } }), 0, 'no chunk row')
})

t.test('DELETE while a chunk is being received, in this process or another, is 503; once it is stored the idle upload is deleted', async t => {
  const data = randomImage(3 * S)
  const d = await init(3)
  t.equal((await put(one.app, await linkFor(api, d.uuid, 0), data.subarray(0, S))).statusCode, 200)
  const a = slowChunk(await linkFor(api, d.uuid, 1), data.subarray(S, S + S / 2))
  await chunk1Writing(d.uuid)
  for (const [name, as] of [['the receiving process', api], ['another process', apiTwo]] as const) {
    const res = await as.delete(`/api/2.0/drives/${d.uuid}/`)
    t.equal(res.statusCode, 503, `${name}: ${res.body}`)
    t.match(res.json()[0], { error_type: 'concurrency', error_message: /receiving a chunk of its upload/ }, name)
  }
  t.match(await one.app.prisma.job.findUnique({ where: { id: d.jobs[0].uuid } }), { state: 'started', cancelRequested: false }, 'the upload goes on')
  a.req.end(data.subarray(S + S / 2, 2 * S))
  const done = await a.answer
  t.equal(done.status, 200, done.body)
  t.equal(await one.app.prisma.uploadChunk.count({ where: { driveId: d.uuid } }), 2, 'the chunk in flight was stored')
  const res = await apiTwo.delete(`/api/2.0/drives/${d.uuid}/`)
  t.equal(res.statusCode, 204, `idle again: deleted (from the other process) ${res.body}`)
  const job = await waitForJob(one.app, d.jobs[0].uuid)
  t.equal(job.state, 'cancelled')
  await eventually(async () => (await one.app.prisma.drive.findUnique({ where: { id: d.uuid } })) === null)
  t.notOk(await one.app.storage.exists(d.uuid), 'no image left')
})
