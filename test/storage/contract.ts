// The drive storage contract (src/storage/types.ts), run against every backend: local files in
// contract.test.ts (npm test), Ceph RBD in test/rbd/storage.rbd.ts (npm run test:rbd).
import { randomBytes, randomUUID } from 'node:crypto'
import { readdir } from 'node:fs/promises'
import path from 'node:path'
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'
import type { Test } from 'tap'
import { StorageError } from '../../src/storage/index.ts'
import type { DriveStorage, StorageErrorCode } from '../../src/storage/index.ts'

const KiB = 1024
const MiB = 1024 * KiB
const GiB = 1024 * MiB
const TiB = 1024 * GiB
/** Allowance for metadata in `allocated` (file system extent blocks). */
const SLACK = 64 * KiB

export async function readAll (s: DriveStorage, id: string, start?: number, end?: number): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of await s.createReadStream(id, { start, end })) parts.push(c as Buffer)
  return Buffer.concat(parts)
}

export async function rejectsCode (t: Test, p: Promise<unknown> | (() => unknown), code: StorageErrorCode, msg: string): Promise<void> {
  try {
    await (typeof p === 'function' ? p() : p)
    t.fail(`${msg}: expected ${code}, resolved`)
  } catch (err) {
    t.ok(err instanceof StorageError, `${msg}: is StorageError`)
    t.equal((err as StorageError).code, code, `${msg}: code ${code}`)
  }
}

/** A new 2 MiB drive `id` that starts with `data`. */
async function driveOf (s: DriveStorage, id: string, data: Buffer): Promise<void> {
  await s.create(id, 2 * MiB)
  const w = await s.openForWrite(id)
  await w.write(data, 0)
  await w.close()
}

/** Registers the contract tests on `t`; `make` gives the storage under test (it may share one). */
export function storageContract (t: Test, make: (t: Test) => DriveStorage): void {
  t.test('placement: says how images sit on hosts (GET /drives/availability_groups/)', async t => {
    t.ok(['one-host', 'spread'].includes(await make(t).placement()))
  })

  t.test('create: sparse 1 TiB drive, exact size, EXISTS leaves it untouched, RangeError', async t => {
    const s = make(t)
    const id = randomUUID()
    await s.create(id, TiB)
    const st = await s.stat(id)
    t.equal(st.size, TiB, 'exact size')
    t.ok(st.allocated <= SLACK, `allocates ~nothing (${st.allocated})`)
    t.ok(await s.exists(id), 'exists')
    const w = await s.openForWrite(id)
    await w.write(Buffer.from('keep me'), 0)
    await w.close()
    await rejectsCode(t, s.create(id, 4096), 'EXISTS', 'second create')
    t.equal((await s.stat(id)).size, TiB, 'size unchanged after failed create')
    t.equal((await readAll(s, id, 0, 6)).toString(), 'keep me', 'data unchanged after failed create')
    await t.rejects(s.create(randomUUID(), -1), RangeError, 'negative size')
    await t.rejects(s.create(randomUUID(), 1.5), RangeError, 'fractional size')
    await t.rejects(s.create(randomUUID(), 16 * TiB + 1), RangeError, 'over 16 TiB')
    await s.delete(id)
  })

  t.test('exact odd sizes, zero-filled', async t => {
    const s = make(t)
    const id = randomUUID()
    const size = 10 * MiB + 517
    await s.create(id, size)
    t.teardown(() => s.delete(id))
    t.equal((await s.stat(id)).size, size)
    const all = await readAll(s, id)
    t.equal(all.length, size, 'reads exactly size bytes')
    t.ok(all.equals(Buffer.alloc(size)), 'all zeros')

    const empty = randomUUID()
    await s.create(empty, 0)
    t.teardown(() => s.delete(empty))
    t.same(await s.stat(empty), { size: 0, allocated: 0 })
    t.equal((await readAll(s, empty)).length, 0)
  })

  t.test('resize up stays sparse and keeps data; resize down truncates', async t => {
    const s = make(t)
    const id = randomUUID()
    const size = 10 * MiB + 517
    await s.create(id, size)
    t.teardown(() => s.delete(id))
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
    const s = make(t)
    const id = randomUUID()
    const size = 8 * MiB + 123
    await s.create(id, size)
    t.teardown(() => s.delete(id))

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
    const s = make(t)
    const id = randomUUID()
    await rejectsCode(t, s.stat(id), 'NOT_FOUND', 'stat')
    await rejectsCode(t, s.createReadStream(id), 'NOT_FOUND', 'createReadStream')
    await rejectsCode(t, s.createWriteStream(id), 'NOT_FOUND', 'createWriteStream')
    await rejectsCode(t, s.openForWrite(id), 'NOT_FOUND', 'openForWrite')
    t.equal(await s.exists(id), false, 'exists is false')
  })

  t.test('delete is idempotent; a deleted id can be created again', async t => {
    const s = make(t)
    const id = randomUUID()
    await s.delete(id)
    await s.create(id, MiB)
    await s.delete(id)
    t.notOk(await s.exists(id))
    await s.delete(id)
    await s.create(id, 2 * MiB)
    t.equal((await s.stat(id)).size, 2 * MiB)
    await s.delete(id)
  })

  t.test('resize and delete ask their guard last: a refusal or an abort changes nothing', async t => {
    const s = make(t)
    const id = randomUUID()
    await s.create(id, 2 * MiB)
    t.teardown(() => s.delete(id))
    const tail = randomBytes(MiB)
    const w = await s.openForWrite(id)
    await w.write(tail, MiB)
    await w.close()
    const refusal = new Error('this job attempt may be stale')
    const refuse = (): void => { throw refusal }
    const refusedWith = async (p: Promise<unknown>, msg: string): Promise<void> => {
      t.equal(await p.then(() => 'resolved', (err: unknown) => err), refusal, msg)
    }
    let asked = 0
    const allow = (): void => { asked++ }
    const unchanged = async (what: string): Promise<void> => {
      t.equal((await s.stat(id)).size, 2 * MiB, `${what}: the size is as it was`)
      t.ok((await readAll(s, id, MiB, 2 * MiB - 1)).equals(tail), `${what}: the data past 1 MiB is there`)
    }
    await refusedWith(s.resize(id, MiB, undefined, refuse), 'a shrink its guard refuses rejects with the guard\'s error as it is')
    await unchanged('refused shrink')
    const aborted = new AbortController()
    aborted.abort()
    await rejectsCode(t, s.resize(id, MiB, aborted.signal), 'ABORTED', 'an aborted shrink')
    await unchanged('aborted shrink')
    await refusedWith(s.delete(id, refuse), 'a delete its guard refuses rejects with the guard\'s error')
    await unchanged('refused delete')
    await s.resize(id, 3 * MiB, undefined, allow)
    t.equal(asked, 1, 'a resize asks its guard once')
    t.equal((await s.stat(id)).size, 3 * MiB, 'and resizes when it allows')
    await s.delete(id, allow)
    t.ok(asked >= 2, 'a delete asks its guard')
    t.notOk(await s.exists(id), 'and deletes when it allows')
  })

  t.test('invalid ids never reach the storage', async t => {
    const s = make(t)
    for (const id of ['../x', '/etc/passwd', 'ABCDEF00-0000-4000-8000-000000000000', '', 'a/b', 'x@snap', '-rf']) {
      await rejectsCode(t, s.create(id, 10), 'INVALID_ID', `create(${JSON.stringify(id)})`)
      await rejectsCode(t, s.stat(id), 'INVALID_ID', `stat(${JSON.stringify(id)})`)
      await rejectsCode(t, s.delete(id), 'INVALID_ID', `delete(${JSON.stringify(id)})`)
      await rejectsCode(t, s.copy(randomUUID(), id), 'INVALID_ID', `copy to ${JSON.stringify(id)}`)
    }
  })

  t.test('copy: progress never counts more bytes than the image holds', async t => {
    const s = make(t)
    // written whole: a file system allocates past its size (the whole last 4 KiB block), and that
    // excess is not data to copy
    const src = randomUUID()
    const size = MiB + 5
    await s.create(src, size)
    const w = await s.openForWrite(src)
    await w.write(randomBytes(size), 0)
    await w.close()
    t.ok((await s.stat(src)).allocated >= size, 'the image is allocated whole')
    const dst = randomUUID()
    const seen: Array<[number, number]> = []
    await s.copy(src, dst, { onProgress: (d, all) => { seen.push([d, all]) } })
    t.same(seen.at(-1), [size, size], 'the copy ends at the image\'s bytes, not its allocated ones')
    t.ok((await readAll(s, dst)).equals(await readAll(s, src)), 'identical')
    await s.delete(src)
    await s.delete(dst)
  })

  t.test('copy: byte-identical, extended to a larger size, progress monotonic to the end, replaces dst', async t => {
    const s = make(t)
    const src = randomUUID()
    const dst = randomUUID()
    const size = 32 * MiB + 7
    await s.create(src, size)
    const a = randomBytes(2 * MiB)
    const w = await s.openForWrite(src)
    await w.write(a, 5 * MiB + 3)
    await w.write(Buffer.from('end'), size - 3)
    await w.close()
    await s.create(dst, MiB) // an existing dst is replaced
    const seen: Array<[number, number]> = []
    const methods: Array<{ method: string, beforeDone: boolean }> = []
    let stats: { method: string } | undefined
    await s.copy(src, dst, {
      size: 40 * MiB,
      onProgress: (d, all) => { seen.push([d, all]) },
      onMethod: (method) => { methods.push({ method, beforeDone: stats === undefined }) },
      onStats: (st) => { stats = st }
    })
    t.ok(methods.length >= 1 && methods.every(m => m.beforeDone), 'the method is told while the copy runs (job data.extra)')
    t.equal(methods.at(-1)?.method, stats?.method, 'and it is the method the copy used')
    t.equal((await s.stat(dst)).size, 40 * MiB, 'extended')
    const want = Buffer.concat([await readAll(s, src), Buffer.alloc(40 * MiB - size)])
    t.ok((await readAll(s, dst)).equals(want), 'byte-identical, extension reads zeros')
    t.ok(seen.length >= 2, 'progress reported')
    t.same(seen[0][0], 0, 'starts at 0')
    const total = seen[seen.length - 1][1]
    t.same(seen[seen.length - 1], [total, total], 'ends at (total, total)')
    t.ok(seen.every((p, i) => i === 0 || p[0] >= seen[i - 1][0]), 'monotonic')
    // the copy is independent of its source
    const w2 = await s.openForWrite(src)
    await w2.write(Buffer.from('changed'), 5 * MiB + 3)
    await w2.close()
    t.ok((await readAll(s, dst, 5 * MiB + 3, 5 * MiB + 9)).equals(a.subarray(0, 7)), 'later source writes do not show in the copy')
    await s.delete(src)
    t.ok((await readAll(s, dst, size - 3, size - 1)).equals(Buffer.from('end')), 'the copy outlives its source')
    await s.delete(dst)
  })

  t.test('copy: a guard refusing right before the replace leaves the destination as it was', async t => {
    const s = make(t)
    const [src, dst] = [randomUUID(), randomUUID()]
    t.teardown(async () => { await s.delete(src); await s.delete(dst) })
    const [fresh, old] = [randomBytes(MiB), randomBytes(MiB)]
    for (const [id, data] of [[src, fresh], [dst, old]] as const) await driveOf(s, id, data)
    const refusal = new Error('this job attempt may be stale')
    let inFence = 0
    const fenced = async (commit: () => Promise<void>): Promise<void> => { inFence++; await commit() }
    const outcome = await s.copy(src, dst, { attempt: 2, fenced, guard: () => { throw refusal } }).then(() => 'resolved', (err: unknown) => err)
    t.equal(outcome, refusal, 'the copy rejects with the guard\'s error as it is')
    t.equal(inFence, 1, 'asked inside the fenced step')
    t.ok((await readAll(s, dst, 0, MiB - 1)).equals(old), 'the destination keeps its data')
    // local files: no partial left beside the image (rbd: the pool's leak check at the end)
    const file = s.path(dst)
    if (file.startsWith('/')) t.same((await readdir(path.dirname(file))).filter(f => f.startsWith(dst)), [path.basename(file)], 'no partial file left')
    let asked = 0
    await s.copy(src, dst, { attempt: 3, fenced, guard: () => { asked++ } })
    t.ok(asked >= 1, 'a copy asks its guard')
    t.ok((await readAll(s, dst, 0, MiB - 1)).equals(fresh), 'and replaces the destination when it allows')
  })

  t.test('copy: a newer attempt copies beside a stale one held in this process; the same attempt twice is EXISTS', async t => {
    const s = make(t)
    const [stale, fresh, dst] = [randomUUID(), randomUUID(), randomUUID()]
    t.teardown(async () => { for (const id of [stale, fresh, dst]) await s.delete(id) })
    const [staleData, freshData] = [randomBytes(MiB), randomBytes(MiB)]
    for (const [id, data] of [[stale, staleData], [fresh, freshData]] as const) await driveOf(s, id, data)
    // attempt 1 is held up inside its fenced step (its copy made), then found stale by its guard
    let release!: () => void
    const held = new Promise<void>(resolve => { release = resolve })
    let reached!: () => void
    const atFence = new Promise<void>(resolve => { reached = resolve })
    const refusal = new Error('attempt 1 is stale')
    const first = s.copy(stale, dst, {
      attempt: 1,
      fenced: async (commit) => { reached(); await held; await commit() },
      guard: () => { throw refusal }
    }).then(() => 'resolved', (err: unknown) => err)
    await atFence
    await rejectsCode(t, s.copy(fresh, dst, { attempt: 1 }), 'EXISTS', 'the same attempt again while it runs')
    // the takeover's attempt, in this same process
    await s.copy(fresh, dst, { attempt: 2, fenced: async (commit) => { await commit() }, guard: () => {} })
    t.ok((await readAll(s, dst, 0, MiB - 1)).equals(freshData), 'the newer attempt\'s copy is in place')
    release()
    t.equal(await first, refusal, 'the stale attempt is refused at its guard')
    t.ok((await readAll(s, dst, 0, MiB - 1)).equals(freshData), 'and the newer copy stays')
    const file = s.path(dst)
    if (file.startsWith('/')) t.same((await readdir(path.dirname(file))).filter(f => f.startsWith(dst)), [path.basename(file)], 'no partial file left')
  })

  t.test('copy errors: NOT_FOUND source, onto itself, ABORTED leaves nothing, a throwing onProgress', async t => {
    const s = make(t)
    const src = randomUUID()
    const dst = randomUUID()
    await rejectsCode(t, s.copy(src, dst), 'NOT_FOUND', 'missing source')
    t.notOk(await s.exists(dst), 'no destination made')
    await s.create(src, 8 * MiB)
    await rejectsCode(t, s.copy(src, src), 'INVALID_ID', 'onto itself')
    const ac = new AbortController()
    ac.abort()
    await rejectsCode(t, s.copy(src, dst, { signal: ac.signal }), 'ABORTED', 'aborted before start')
    t.notOk(await s.exists(dst), 'nothing left after abort')
    const boom = new Error('boom')
    await t.rejects(s.copy(src, dst, { onProgress: () => { throw boom } }), boom, 'the callback error')
    t.notOk(await s.exists(dst), 'nothing left after a throwing onProgress')
    await s.copy(src, dst)
    t.ok(await s.exists(dst), 'a later copy works')
    await s.delete(src)
    await s.delete(dst)
  })
}
