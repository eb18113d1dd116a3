// growingWriteStream (a multipart file, its size unknown until it ends): given an upper bound (the
// request's Content-Length) the image takes that size first and is never grown midway (each growth
// closes the image with an fsync and resizes it, an `rbd resize` on Ceph); without one it doubles
// from 64 MiB. Either way the image ends exactly as long as the data, holding it byte for byte.
import { createHash, randomBytes, randomUUID } from 'node:crypto'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import t from 'tap'
import { transferDeps } from '../../src/features/transfers/service.ts'
import { growingWriteStream } from '../../src/features/transfers/streams.ts'
import { startMultipartUpload } from '../../src/features/transfers/upload-multipart.ts'
import type { DriveStorage, DriveWriter } from '../../src/storage/index.ts'
import { buildTestApp, createUser, eventually } from '../helpers/app.ts'
import { MiB, sha256 } from './helpers.ts'

const { app } = await buildTestApp(t, { runWorkers: false })

/** `target` with some of its methods replaced (`overrides`); the others are its own, bound to it. */
function overriding<T extends object> (target: T, overrides: Partial<T>): T {
  return new Proxy(target, {
    get (obj, prop, receiver) {
      if (Object.hasOwn(overrides, prop)) return overrides[prop as keyof T]
      const v = Reflect.get(obj, prop, receiver) as unknown
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(obj) : v
    }
  })
}

/** app.storage, recording the sizes it is resized to. */
function counting (): { storage: DriveStorage, resizes: number[] } {
  const resizes: number[] = []
  const storage = overriding(app.storage, { resize: async (id: string, size: number) => { resizes.push(size); await app.storage.resize(id, size) } })
  return { storage, resizes }
}

const piece = randomBytes(MiB)
const length = 70 * MiB + 12345
function * pieces (): Generator<Buffer> {
  for (let off = 0; off < length; off += 64 * 1024) yield piece.subarray(off % MiB, off % MiB + Math.min(64 * 1024, length - off))
}
const expectedSha = (() => { const h = createHash('sha256'); for (const p of pieces()) h.update(p); return h.digest('hex') })()

async function contents (id: string): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of await app.storage.createReadStream(id)) parts.push(c as Buffer)
  return Buffer.concat(parts)
}

for (const expected of [undefined, length + 300]) {
  t.test(expected === undefined ? 'no size known: doubles from 64 MiB, then cut to the data' : 'an upper bound known: taken at once, never grown, then cut to the data', async t => {
    const id = randomUUID()
    await app.storage.create(id, 0)
    t.teardown(() => app.storage.delete(id))
    const { storage, resizes } = counting()
    const w = growingWriteStream(storage, id, 1024 * MiB, expected)
    await pipeline(Readable.from(pieces()), w)
    t.equal(w.bytes(), length)
    t.same(resizes, expected === undefined ? [64 * MiB, 128 * MiB, length] : [expected, length], `resized to ${resizes.join(', ')}`)
    t.equal((await app.storage.stat(id)).size, length, 'the image is exactly the data\'s length')
    t.equal(sha256(await contents(id)), expectedSha, 'and holds it')
  })
}

t.test('a multipart upload takes the request\'s Content-Length as the bound', async t => {
  const alice = await createUser(app)
  const { storage, resizes } = counting()
  const hint = length + 400
  const upload = await startMultipartUpload({ ...transferDeps(app), storage }, alice.id, { name: 'bounded', media: 'disk' }, hint)
  await upload.receive(Readable.from(pieces()), () => false)
  const done = await upload.commit()
  t.equal(done.sha256, expectedSha)
  t.same(resizes, [hint, length], 'the image was sized once to the bound, then cut to the file')
  await app.storage.delete(upload.driveId)
})

t.test('destroyed while the image is being sized: the writer opened after is closed, never left holding the image', async t => {
  const id = randomUUID()
  await app.storage.create(id, 0)
  // a resize held until the stream is destroyed; every writer opened, and whether it was closed
  let release!: () => void
  const released = new Promise<void>(resolve => { release = resolve })
  const opened: Array<{ closed: boolean }> = []
  let resizing = false
  const storage = overriding(app.storage, {
    resize: async (rid: string, size: number) => { resizing = true; await released; await app.storage.resize(rid, size) },
    openForWrite: async (wid: string): Promise<DriveWriter> => {
      const w = await app.storage.openForWrite(wid)
      const seen = { closed: false }
      opened.push(seen)
      return overriding(w, { close: async () => { seen.closed = true; await w.close() } })
    }
  })
  const w = growingWriteStream(storage, id, 1024 * MiB, 4 * MiB)
  w.on('error', () => {})
  w.write(randomBytes(MiB)) // a whole gathered batch: the first write sizes the image, then opens it
  await eventually(async () => resizing)
  w.destroy()
  await new Promise(resolve => w.once('close', resolve))
  release()
  await eventually(async () => opened.length === 1 && opened[0].closed, { timeoutMs: 30_000 })
  t.same(opened, [{ closed: true }], 'the one writer opened (after the destroy) was closed')
  // on rbd an import left running would hold a watch on the image, and this would fail
  await app.storage.delete(id)
  t.notOk(await app.storage.exists(id), 'and the image can go')
})
