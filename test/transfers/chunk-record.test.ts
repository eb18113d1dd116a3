// A chunk whose request will not finish the upload is recorded in one statement that commits by
// itself (issue 18: a 1 MiB chunk's request made six round trips to PostgreSQL, three of them the
// record's transaction); the chunk that may be the last, with every other chunk through this app,
// is recorded in the transaction that finishes the upload. Records of one upload still run one at
// a time: chunks recorded at once all count. An app without workers, so that every statement its
// pool runs is a request's, and a second app on the same database and images (another process).
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type pg from 'pg'
import t from 'tap'
import { SessionLocks, memberName } from '../../src/db/session-locks.ts'
import { chunkClaimGroup } from '../../src/domain/chunks.ts'
import { transferDeps } from '../../src/features/transfers/service.ts'
import { FINISH_AFTER_RECORD_SECONDS, recordChunk, type ChunksDigest } from '../../src/features/transfers/upload-chunked.ts'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { waitForJob } from '../helpers/jobs.ts'
import { randomImage, sha256 } from './helpers.ts'

// local storage: a request reads chunks back into its running hash only where positional reads are
// cheap (not on rbd: there a worker hashes the image of an upload whose chunks came out of order)
const one = await buildTestApp(t, { runWorkers: false, config: { storage: 'local' } })
const two = await buildTestApp(t, { runWorkers: false, databaseUrl: one.databaseUrl, config: { storage: 'local', drivesDir: one.config.drivesDir } })
const alice = await createUser(one.app)
const api = client(one.app, alice)

const K = 4096

async function init (size: number): Promise<{ uuid: string, jobs: Array<{ uuid: string }> }> {
  const res = await api.post('/api/2.0/initupload/', { name: 'record', size, media: 'disk' })
  if (res.statusCode !== 201) throw new Error(`initupload: ${res.statusCode} ${res.body}`)
  return res.json().objects[0]
}

/** resumable.js's POST of chunk `n` (from 1) of `data` in chunks of K, to `app`. */
function post (app: typeof one.app, uuid: string, data: Buffer, n: number) {
  const count = data.length / K
  const q = new URLSearchParams({
    resumableChunkNumber: String(n),
    resumableChunkSize: String(K),
    resumableCurrentChunkSize: String(K),
    resumableTotalSize: String(data.length),
    resumableIdentifier: `${data.length}-image`,
    resumableTotalChunks: String(count)
  })
  return app.inject({
    method: 'POST',
    url: `/api/2.0/drives/${uuid}/upload/?${q.toString()}`,
    headers: { authorization: alice.authorization, 'content-type': 'application/octet-stream' },
    payload: data.subarray((n - 1) * K, n * K)
  })
}

/** The statements app one's pool runs while `fn` runs (`transactions`: connections taken for one). */
async function statementsOf<T> (fn: () => Promise<T>): Promise<{ result: T, statements: string[], transactions: number }> {
  const pool = one.app.dbPool as unknown as { query: (this: pg.Pool, ...args: unknown[]) => unknown, connect: (this: pg.Pool, ...args: unknown[]) => unknown }
  const { query, connect } = pool
  const statements: string[] = []
  let transactions = 0
  // pool.query takes its connection with pool.connect, at once: not a transaction
  let inQuery = false
  pool.query = function (this: pg.Pool, ...args: unknown[]) {
    const q = args[0] as string | { text?: string }
    statements.push(typeof q === 'string' ? q : q.text ?? '')
    inQuery = true
    try {
      return query.apply(this, args)
    } finally {
      inQuery = false
    }
  }
  pool.connect = function (this: pg.Pool, ...args: unknown[]) {
    if (!inQuery) transactions++
    return connect.apply(this, args)
  }
  try {
    return { result: await fn(), statements, transactions }
  } finally {
    pool.query = query
    pool.connect = connect
  }
}

const jobRow = (id: string) => one.app.prisma.job.findUniqueOrThrow({ where: { id }, select: { state: true, bytesDone: true, progress: true, description: true, runAt: true } })

t.test('a chunk that will not finish the upload is recorded in one statement, no transaction; the last one finishes the upload in its request', async t => {
  const data = randomImage(3 * K)
  const d = await init(data.length)
  // chunk 2 first: chunk 1 is missing, so this request cannot be the upload's last
  const second = await statementsOf(() => post(one.app, d.uuid, data, 2))
  t.equal(second.result.statusCode, 200, second.result.body)
  t.match(second.result.json(), { chunk: 2, chunks_stored: 1, chunks_total: 3, complete: false })
  t.equal(second.transactions, 0, 'no transaction')
  t.equal(second.statements.filter(s => /INSERT INTO upload_chunks/.test(s)).length, 1, 'the record is one statement')
  t.match(await jobRow(d.jobs[0].uuid), { state: 'started', bytesDone: BigInt(K), progress: 33, description: 'received 1 of 3 chunks' })
  const first = await statementsOf(() => post(one.app, d.uuid, data, 1))
  t.equal(first.result.statusCode, 200, first.result.body)
  t.match(first.result.json(), { chunk: 1, chunks_stored: 2, complete: false })
  t.equal(first.transactions, 0, 'chunk 1, with chunk 3 still to come: no transaction')
  // every other chunk came through this app: its request may finish the upload, in a transaction
  const last = await statementsOf(() => post(one.app, d.uuid, data, 3))
  t.equal(last.result.statusCode, 200, last.result.body)
  t.match(last.result.json(), { chunk: 3, chunks_stored: 3, complete: true })
  t.equal(last.transactions, 1, 'the last chunk is recorded in the transaction that finishes the upload')
  const job = await one.app.prisma.job.findUniqueOrThrow({ where: { id: d.jobs[0].uuid } })
  t.equal(job.state, 'success', 'finished by the request (this app runs no workers)')
  t.same(job.result, { sha256: sha256(data), bytes: data.length })
  t.match((await api.get(`/api/2.0/drives/${d.uuid}/`)).json(), { status: 'unmounted' })
})

t.test('chunks recorded at once each count: the bytes and the count are every chunk\'s', async t => {
  const n = 16
  const data = randomImage(n * K)
  const d = await init(data.length)
  // chunks 2 to 16 at once, each recorded without a transaction (chunk 1 is missing)
  const answers = await Promise.all(Array.from({ length: n - 1 }, async (_, i) => post(one.app, d.uuid, data, i + 2)))
  t.same(answers.map(a => a.statusCode), Array(n - 1).fill(200), answers.map(a => a.body).join('\n'))
  t.same(answers.map(a => a.json().chunks_stored as number).sort((a, b) => a - b), Array.from({ length: n - 1 }, (_, i) => i + 1),
    'each record saw the ones before it: counts 1 to 15, once each')
  t.match(await jobRow(d.jobs[0].uuid), { state: 'started', bytesDone: BigInt((n - 1) * K), description: `received ${n - 1} of ${n} chunks` })
  t.equal(await one.app.prisma.uploadChunk.count({ where: { driveId: d.uuid } }), n - 1)
  const res = await post(one.app, d.uuid, data, 1)
  t.match(res.json(), { chunk: 1, chunks_stored: n, complete: true })
  const job = await one.app.prisma.job.findUniqueOrThrow({ where: { id: d.jobs[0].uuid } })
  t.equal(job.state, 'success')
  t.same(job.result, { sha256: sha256(data), bytes: data.length }, 'the chunks that came out of order read back into the hash')
})

t.test('a chunk recorded without a transaction that completes the upload makes its job due: a worker hashes the image and finishes it', async t => {
  const data = randomImage(3 * K)
  const d = await init(data.length)
  t.equal((await post(one.app, d.uuid, data, 1)).statusCode, 200)
  t.equal((await post(one.app, d.uuid, data, 2)).statusCode, 200)
  // the last chunk through another process, which saw none of the others: it cannot tell the digest
  const before = new Date()
  const res = await post(two.app, d.uuid, data, 3)
  t.equal(res.statusCode, 200, res.body)
  t.match(res.json(), { chunk: 3, chunks_stored: 3, chunks_total: 3, complete: true })
  const row = await jobRow(d.jobs[0].uuid)
  t.match(row, { state: 'started', bytesDone: BigInt(3 * K), description: 'all chunks received; verifying the image' })
  t.ok(row.runAt.getTime() <= Date.now() && row.runAt.getTime() >= before.getTime() - 1000, 'due now')
  // a process with workers takes it
  const worker = await buildTestApp(t, { databaseUrl: one.databaseUrl, config: { storage: 'local', drivesDir: one.config.drivesDir } })
  const job = await waitForJob(worker.app, d.jobs[0].uuid)
  t.equal(job.state, 'success')
  t.same(job.result, { sha256: sha256(data), bytes: data.length })
})

t.test('a record without a transaction that completes the upload after all (the chunks after it were recorded first): its request finishes the upload in a transaction of its own, or leaves it to a worker', async t => {
  const deps = transferDeps(one.app)
  const locks = new SessionLocks({ connectionString: one.databaseUrl })
  t.teardown(() => locks.close())
  const timing = { startedAt: Date.now(), lookupsMs: 0, receiveMs: 0, hashMs: 0, fsyncMs: 0, movedBytes: 0 }
  /** An upload of 3 chunks with chunks 1 and 2 POSTed, chunk 3 written into the image, and recordChunk of chunk 3 alone (no transaction) with `digest`. */
  const lastAlone = async (digest: () => Promise<ChunksDigest | undefined>, before?: (uuid: string) => Promise<unknown>) => {
    const data = randomImage(3 * K)
    const d = await init(data.length)
    for (const n of [1, 2]) t.equal((await post(one.app, d.uuid, data, n)).statusCode, 200)
    await before?.(d.uuid)
    await pipeline(Readable.from([data.subarray(2 * K)]), await one.app.storage.createWriteStream(d.uuid, { start: 2 * K }))
    const claim = await locks.tryLock(memberName(chunkClaimGroup(alice.id, d.uuid), 2))
    if (claim === undefined) throw new Error('not claimed')
    try {
      const drive = { id: d.uuid, ownerId: alice.id, size: data.length }
      const result = await recordChunk(deps, drive, d.jobs[0].uuid, 2, K, K, 'accept', { timing, claim, alone: true, digest })
      return { data, d, result }
    } finally {
      await claim.release()
    }
  }

  const told = await lastAlone(async () => ({ hex: 'a'.repeat(64), workerMs: 1, readBack: { before: 0, last: 0 } }))
  t.match(told.result, { chunk: 2, chunksStored: 3, complete: true })
  const job = await one.app.prisma.job.findUniqueOrThrow({ where: { id: told.d.jobs[0].uuid } })
  t.equal(job.state, 'success', 'finished by the request, with the digest it could tell (this app runs no workers)')
  t.same(job.result, { sha256: 'a'.repeat(64), bytes: told.data.length })
  t.match((await api.get(`/api/2.0/drives/${told.d.uuid}/`)).json(), { status: 'unmounted' })

  const before = Date.now()
  const untold = await lastAlone(async () => undefined)
  t.match(untold.result, { complete: true })
  const due = await jobRow(untold.d.jobs[0].uuid)
  t.match(due, { state: 'started', description: 'all chunks received; verifying the image' }, 'the digest could not be told: a worker hashes the image')
  t.ok(due.runAt.getTime() <= Date.now(), 'due now')

  // the bytes say complete, the rows do not (chunk 1's row gone, as no request removes it): not finished on the bytes' word
  const short = await lastAlone(async () => ({ hex: 'b'.repeat(64), workerMs: 1, readBack: { before: 0, last: 0 } }),
    async (uuid) => one.app.prisma.uploadChunk.deleteMany({ where: { driveId: uuid, number: 0 } }))
  t.match(short.result, { complete: true })
  t.match(await jobRow(short.d.jobs[0].uuid), { state: 'started', description: 'all chunks received; verifying the image' }, 'two rows of three: left to a worker, which counts them')
  t.ok((await jobRow(short.d.jobs[0].uuid)).runAt.getTime() <= Date.now(), 'due now')

  const failed = await lastAlone(async () => { throw new Error('the hash worker failed') })
  t.match(failed.result, { complete: true }, 'the chunk is recorded and answered')
  const later = await jobRow(failed.d.jobs[0].uuid)
  t.equal(later.state, 'started')
  t.ok(later.runAt.getTime() > before + (FINISH_AFTER_RECORD_SECONDS - 5) * 1000 && later.runAt.getTime() <= Date.now() + FINISH_AFTER_RECORD_SECONDS * 1000,
    `its request failed to finish it: a worker takes it ${FINISH_AFTER_RECORD_SECONDS} s after the record`)
})
