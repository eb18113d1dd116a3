import { randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readdir, readlink } from 'node:fs/promises'
import path from 'node:path'
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'
import t from 'tap'
import type { Test } from 'tap'
import { createStorage, LocalDriveStorage, StorageError } from '../../src/storage/index.ts'
import type { DriveStorage, StorageErrorCode } from '../../src/storage/index.ts'
import { recordSyncs } from '../helpers/syncs.ts'

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

// sizes, resize, positional writes and ranged reads, NOT_FOUND and delete are the storage
// contract's (test/storage/contract.ts), run on this backend by contract.test.ts

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

t.test('a durable write stream writes back every few MiB while it writes, and has fsynced when it finishes', async t => {
  const { root } = setup(t)
  // every fdatasync and fsync of a file under root, in order
  const calls = await recordSyncs(t, file => file.startsWith(root))
  for (const durable of [true, false]) {
    const s = createStorage({ root, durable })
    const id = randomUUID()
    await s.create(id, 12 * MiB)
    calls.length = 0
    await pipeline(Readable.from((function * () { for (let i = 0; i < 12; i++) yield Buffer.alloc(MiB, i + 1) })()), await s.createWriteStream(id))
    if (durable) {
      t.ok(calls.filter(c => c === 'datasync').length >= 1, `12 MiB written: written back while writing (${calls.join(', ')})`)
      t.equal(calls.at(-1), 'fsync', 'and fsynced before the stream finished')
    } else {
      t.same(calls, [], 'a storage that is not durable never syncs')
    }
  }
})

t.test('durable copies and writes flush in the background while they run, and leave no file open', async t => {
  const { root, s } = setup(t)
  const src = randomUUID()
  const dst = randomUUID()
  await s.create(src, 96 * MiB)
  const openFiles = async () => {
    const out: string[] = []
    for (const fd of await readdir('/proc/self/fd')) {
      try { out.push(await readlink(`/proc/self/fd/${fd}`)) } catch {}
    }
    return out.filter(f => f.startsWith(root))
  }
  // a write stream of 96 MiB: background flushes run while it writes (fdatasync in the thread pool)
  await pipeline(Readable.from((function * () { for (let i = 0; i < 96; i++) yield Buffer.alloc(MiB, i + 1) })()), await s.createWriteStream(src))
  await s.copy(src, dst)
  // the copy's background flusher ends with the copy (it checks between flushes)
  for (let i = 0; i < 100 && (await openFiles()).length > 0; i++) await new Promise(resolve => setTimeout(resolve, 20))
  t.same(await openFiles(), [], 'no handle of the storage is left open')
  const a = await readAll(s, src)
  t.ok(a.subarray(95 * MiB).every(b => b === 96) && a[0] === 1, 'the written bytes are there')
  t.ok((await readAll(s, dst)).equals(a), 'and the copy holds them')
})
