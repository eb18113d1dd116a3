import { randomBytes, randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readdir } from 'node:fs/promises'
import path from 'node:path'
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'
import t from 'tap'
import type { Test } from 'tap'
import { createStorage, LocalDriveStorage, StorageError } from '../../src/storage/index.ts'
import type { DriveStorage, StorageErrorCode } from '../../src/storage/index.ts'

const KiB = 1024
const MiB = 1024 * KiB
const GiB = 1024 * MiB
const TiB = 1024 * GiB
/** Allowance for file system metadata (extent tree blocks) counted in st_blocks. */
const SLACK = 64 * KiB

async function readAll (s: DriveStorage, id: string, start?: number, end?: number): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of await s.createReadStream(id, { start, end })) parts.push(c as Buffer)
  return Buffer.concat(parts)
}

async function rejectsCode (t: Test, p: Promise<unknown> | (() => unknown), code: StorageErrorCode, msg: string): Promise<void> {
  try {
    await (typeof p === 'function' ? p() : p)
    t.fail(`${msg}: expected ${code}, resolved`)
  } catch (err) {
    t.ok(err instanceof StorageError, `${msg}: is StorageError`)
    t.equal((err as StorageError).code, code, `${msg}: code ${code}`)
  }
}

function setup (t: Test): { root: string, s: DriveStorage } {
  const root = path.join(t.testdir(), 'drives')
  return { root, s: createStorage({ root }) }
}

t.test('create: sparse 1 TiB drive, exact size, root made on first use, EXISTS', async t => {
  const { root, s } = setup(t)
  t.notOk(existsSync(root), 'root does not exist before first use')
  const id = randomUUID()
  await s.create(id, TiB)
  t.ok(existsSync(root), 'root created')
  const st = await s.stat(id)
  t.equal(st.size, TiB, 'exact size')
  t.ok(st.allocated <= SLACK, `allocates ~nothing (${st.allocated})`)
  t.ok(await s.exists(id), 'exists')
  t.equal(s.path(id), path.join(root, id.slice(0, 2), `${id}.img`), 'layout <root>/<xx>/<id>.img')

  // EXISTS, and the existing drive is untouched.
  const w = await s.openForWrite(id)
  await w.write(Buffer.from('keep me'), 0)
  await w.close()
  await rejectsCode(t, s.create(id, 4096), 'EXISTS', 'second create')
  t.equal((await s.stat(id)).size, TiB, 'size unchanged after failed create')
  t.equal((await readAll(s, id, 0, 6)).toString(), 'keep me', 'data unchanged after failed create')

  await t.rejects(s.create(randomUUID(), -1), RangeError, 'negative size')
  await t.rejects(s.create(randomUUID(), 1.5), RangeError, 'fractional size')
  await t.rejects(s.create(randomUUID(), 16 * TiB + 1), RangeError, 'over 16 TiB')
})

t.test('exact odd sizes, zero-filled', async t => {
  const { s } = setup(t)
  const id = randomUUID()
  const size = 10 * MiB + 517
  await s.create(id, size)
  t.equal((await s.stat(id)).size, size)
  const all = await readAll(s, id)
  t.equal(all.length, size, 'reads exactly size bytes')
  t.ok(all.equals(Buffer.alloc(size)), 'all zeros')

  const empty = randomUUID()
  await s.create(empty, 0)
  t.same(await s.stat(empty), { size: 0, allocated: 0 })
  t.equal((await readAll(s, empty)).length, 0)
})

t.test('resize up stays sparse and keeps data; resize down truncates', async t => {
  const { s } = setup(t)
  const id = randomUUID()
  const size = 10 * MiB + 517
  await s.create(id, size)
  const head = randomBytes(MiB)
  const w = await s.openForWrite(id)
  await w.write(head, 0)
  await w.close()
  const before = await s.stat(id)
  t.ok(before.allocated >= MiB, 'data allocated')

  await s.resize(id, 100 * GiB + 3)
  const up = await s.stat(id)
  t.equal(up.size, 100 * GiB + 3, 'grown to exact size')
  t.ok(up.allocated <= before.allocated + SLACK, `growing allocates nothing (${before.allocated} -> ${up.allocated})`)
  t.ok((await readAll(s, id, 0, MiB - 1)).equals(head), 'data kept')
  t.ok((await readAll(s, id, 100 * GiB - 10, 100 * GiB + 2)).equals(Buffer.alloc(13)), 'new tail reads zeros')

  await s.resize(id, 1000)
  t.equal((await s.stat(id)).size, 1000, 'shrunk to exact size')
  const all = await readAll(s, id)
  t.equal(all.length, 1000)
  t.ok(all.equals(head.subarray(0, 1000)), 'prefix kept')

  await s.resize(id, 1000)
  t.equal((await s.stat(id)).size, 1000, 'same size is a no-op')

  const missing = randomUUID()
  await rejectsCode(t, s.resize(missing, 10), 'NOT_FOUND', 'resize missing')
  t.notOk(await s.exists(missing), 'resize does not create')
})

t.test('writes at offsets, ranged reads, never truncates, bounded by size', async t => {
  const { s } = setup(t)
  const id = randomUUID()
  const size = 8 * MiB + 123
  await s.create(id, size)

  // Positional writer, including an unaligned write and one ending exactly at the end.
  const a = randomBytes(300_001)
  const b = randomBytes(777)
  const w = await s.openForWrite(id)
  t.equal(w.size, size)
  await w.write(a, 12_345)
  await w.write(b, size - b.length)
  await t.rejects(w.write(Buffer.alloc(2), size - 1), RangeError, 'write crossing the end')
  await t.rejects(w.write(Buffer.alloc(1), -1), RangeError, 'negative offset')
  await w.close()
  await w.close() // idempotent
  t.equal((await s.stat(id)).size, size, 'size unchanged by writes')

  // Write stream at an offset, fed in several chunks; must not truncate the tail.
  const c = randomBytes(3 * MiB + 11)
  const ws = await s.createWriteStream(id, { start: 2 * MiB + 1 })
  await pipeline(Readable.from([c.subarray(0, MiB), c.subarray(MiB, 2 * MiB + 5), c.subarray(2 * MiB + 5)]), ws)
  t.equal((await s.stat(id)).size, size, 'write stream does not truncate')

  const expected = Buffer.alloc(size)
  a.copy(expected, 12_345)
  b.copy(expected, size - b.length)
  c.copy(expected, 2 * MiB + 1)
  t.ok((await readAll(s, id)).equals(expected), 'whole image as expected')
  t.ok((await readAll(s, id, 12_345, 12_345 + a.length - 1)).equals(a), 'inclusive end range')
  t.ok((await readAll(s, id, 2 * MiB + 1, 2 * MiB + 1)).equals(c.subarray(0, 1)), 'single byte range')
  t.ok((await readAll(s, id, size - 10)).equals(expected.subarray(size - 10)), 'open-ended range')
  t.ok((await readAll(s, id, size - 10, size + 100)).equals(expected.subarray(size - 10)), 'end clamped to size')
  t.equal((await readAll(s, id, size + 5)).length, 0, 'start past end reads nothing')
  await t.rejects(s.createReadStream(id, { start: 10, end: 5 }), RangeError, 'end before start')

  // A write stream that runs past the end fails and does not grow the drive.
  const over = await s.createWriteStream(id, { start: size - 3 })
  await t.rejects(pipeline(Readable.from([Buffer.alloc(10)]), over), RangeError, 'stream past end fails')
  t.equal((await s.stat(id)).size, size, 'size unchanged after overflowing stream')
  await t.rejects(s.createWriteStream(id, { start: size + 1 }), RangeError, 'start past end')
})

t.test('NOT_FOUND', async t => {
  const { s } = setup(t)
  const id = randomUUID()
  await rejectsCode(t, s.stat(id), 'NOT_FOUND', 'stat')
  await rejectsCode(t, s.createReadStream(id), 'NOT_FOUND', 'createReadStream')
  await rejectsCode(t, s.createWriteStream(id), 'NOT_FOUND', 'createWriteStream')
  await rejectsCode(t, s.openForWrite(id), 'NOT_FOUND', 'openForWrite')
  t.equal(await s.exists(id), false, 'exists is false')
  t.notOk(existsSync(s.path(id)), 'nothing created by failed opens')
})

t.test('delete is idempotent', async t => {
  const { s } = setup(t)
  const id = randomUUID()
  await s.delete(id) // never existed
  await s.create(id, MiB)
  await s.delete(id)
  t.notOk(await s.exists(id))
  t.notOk(existsSync(s.path(id)))
  await s.delete(id)
  await s.create(id, 2 * MiB) // can be created again
  t.equal((await s.stat(id)).size, 2 * MiB)
})

t.test('invalid ids and path escapes are rejected before touching the disk', async t => {
  const parent = t.testdir({ 'secret.img': 'secret' })
  const root = path.join(parent, 'drives')
  const s = new LocalDriveStorage({ root })
  const valid = randomUUID()
  const bad = [
    '../x', '/etc/passwd', 'a/../../b', '../secret', '..', '.', '', ' ',
    valid.toUpperCase(), `${valid}/`, `../${valid}`, `${valid}\n`, `${valid}\0`,
    `${valid.slice(0, 2)}/../../secret`, valid.replace(/-/g, ''), `${valid}x`,
    'ZZZZZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZZZZZZZZZ', '0000000g-0000-0000-0000-000000000000',
  ]
  for (const id of bad) {
    const label = JSON.stringify(id)
    t.throws(() => s.path(id), { code: 'INVALID_ID' }, `path(${label})`)
    await rejectsCode(t, s.create(id, 1), 'INVALID_ID', `create(${label})`)
    await rejectsCode(t, s.resize(id, 1), 'INVALID_ID', `resize(${label})`)
    await rejectsCode(t, s.stat(id), 'INVALID_ID', `stat(${label})`)
    await rejectsCode(t, s.exists(id), 'INVALID_ID', `exists(${label})`)
    await rejectsCode(t, s.delete(id), 'INVALID_ID', `delete(${label})`)
    await rejectsCode(t, s.createReadStream(id), 'INVALID_ID', `createReadStream(${label})`)
    await rejectsCode(t, s.createWriteStream(id), 'INVALID_ID', `createWriteStream(${label})`)
    await rejectsCode(t, s.openForWrite(id), 'INVALID_ID', `openForWrite(${label})`)
    await rejectsCode(t, s.copy(id, valid), 'INVALID_ID', `copy from ${label}`)
    await rejectsCode(t, s.copy(valid, id), 'INVALID_ID', `copy to ${label}`)
  }
  t.same((await readdir(parent)).sort(), ['secret.img'], 'nothing created next to the root')
  t.notOk(existsSync(root), 'root not even created')
  t.throws(() => s.path(123 as unknown as string), { code: 'INVALID_ID' }, 'non-string id')
})

t.test('durable: false behaves the same', async t => {
  const root = path.join(t.testdir(), 'drives')
  const s = createStorage({ root, durable: false })
  const id = randomUUID()
  await s.create(id, 5 * MiB + 1)
  const ws = await s.createWriteStream(id, { start: 5 })
  await pipeline(Readable.from([Buffer.from('hello')]), ws)
  t.equal((await readAll(s, id, 5, 9)).toString(), 'hello')
  t.equal((await s.stat(id)).size, 5 * MiB + 1)
})
