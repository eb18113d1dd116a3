// resumable.js asks before each chunk whether it is stored (a GET, its testChunks default), so a
// GET during an upload is one statement on the pg pool (issue 18): the drive, the upload's chunk
// size, the chunk and the count of stored chunks read together, where the Prisma lookup took three
// round trips and the count of a stored chunk a fourth. Its own app without workers, so that every
// statement the pool runs while a GET is answered is that GET's. What the GET answers is tested in
// resumable.test.ts.
import type pg from 'pg'
import t from 'tap'
import { buildTestApp, client, createUser } from '../helpers/app.ts'

const { app } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const bob = await createUser(app)
const api = client(app, alice)

const K = 4096
const size = 3 * K
/** resumable.js's query string for chunk `n` (from 1) of this upload in chunks of `chunkSize` (the last takes the rest). */
function url (uuid: string, n: number, chunkSize = K): string {
  const count = Math.max(1, Math.floor(size / chunkSize))
  return `/api/2.0/drives/${uuid}/upload/?` + new URLSearchParams({
    resumableChunkNumber: String(n),
    resumableChunkSize: String(chunkSize),
    resumableCurrentChunkSize: String(n === count ? size - (count - 1) * chunkSize : chunkSize),
    resumableTotalSize: String(size),
    resumableIdentifier: `${size}-image`,
    resumableTotalChunks: String(count)
  }).toString()
}

/** The statements the app's pool runs while `fn` runs (Prisma's as well: it queries through this pool). */
async function statementsOf<T> (fn: () => Promise<T>): Promise<{ result: T, statements: string[] }> {
  const pool = app.dbPool as unknown as { query: (this: pg.Pool, ...args: unknown[]) => unknown }
  const original = pool.query
  const statements: string[] = []
  pool.query = function (this: pg.Pool, ...args: unknown[]) {
    const q = args[0] as string | { text?: string }
    statements.push(typeof q === 'string' ? q : q.text ?? '')
    return original.apply(this, args)
  }
  try {
    return { result: await fn(), statements }
  } finally {
    pool.query = original
  }
}

t.test('a GET while the drive is uploading is one statement: stored (200, with the count), not stored (404), a wrong chunk size (400)', async t => {
  const d = (await api.post('/api/2.0/initupload/', { name: 'status', size, media: 'disk' })).json().objects[0] as { uuid: string }
  const first = await statementsOf(() => api.get(url(d.uuid, 1)))
  t.equal(first.result.statusCode, 404, 'no chunk yet: not stored')
  t.equal(first.statements.length, 1, 'one statement')
  const post = await app.inject({ method: 'POST', url: url(d.uuid, 2), headers: { authorization: alice.authorization, 'content-type': 'application/octet-stream' }, payload: Buffer.alloc(K, 7) })
  t.equal(post.statusCode, 200, post.body)

  const stored = await statementsOf(() => api.get(url(d.uuid, 2)))
  t.equal(stored.result.statusCode, 200)
  t.same(stored.result.json(), { chunk: 2, bytes: K, chunks_stored: 1, chunks_total: 3, complete: false }, 'stored, one of three')
  t.equal(stored.statements.length, 1, 'one statement, the count with it')
  t.notMatch(stored.statements[0], /FOR (UPDATE|SHARE)/, 'which locks nothing')

  const missing = await statementsOf(() => api.get(url(d.uuid, 3)))
  t.equal(missing.result.statusCode, 404)
  t.match(missing.result.json(), [{ error_type: 'notexist', error_point: 'resumableChunkNumber' }])
  t.equal(missing.statements.length, 1, 'one statement')

  const wrong = await statementsOf(() => api.get(url(d.uuid, 1, 2 * K)))
  t.equal(wrong.result.statusCode, 400, 'the chunk size the first chunk fixed is K')
  t.match(wrong.result.json(), [{ error_type: 'validation', error_point: 'resumableChunkSize' }])
  t.equal(wrong.statements.length, 1, 'one statement')

  // another account: the statement finds no drive of its own, and the general lookup says 404
  const other = await client(app, bob).get(url(d.uuid, 2))
  t.equal(other.statusCode, 404, 'another account does not see the chunk')
  t.match(other.json(), [{ error_type: 'notexist' }])
})
