import { spawn } from 'node:child_process'
import { createHash, randomBytes, randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chmod, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import t from 'tap'
import { LocalDriveStorage } from '../../src/storage/index.ts'
import type { CopyMethod, DriveStorage } from '../../src/storage/index.ts'
import { expectCode, noFilesOf } from '../helpers/storage.ts'

const KiB = 1024
const MiB = 1024 * KiB
/** Allowance for file system metadata (extent tree blocks) counted in st_blocks. */
const SLACK = 64 * KiB

async function sha256 (s: DriveStorage, id: string, start?: number, end?: number): Promise<string> {
  const h = createHash('sha256')
  await pipeline(await s.createReadStream(id, { start, end }), h)
  return h.digest('hex')
}

function sha256OfZeros (len: number): string {
  const h = createHash('sha256')
  const zero = Buffer.alloc(4 * MiB)
  for (let left = len; left > 0; left -= zero.length) h.update(zero.subarray(0, Math.min(left, zero.length)))
  return h.digest('hex')
}

async function writeRandom (s: DriveStorage, id: string, start: number, len: number): Promise<void> {
  async function * gen (): AsyncGenerator<Buffer> {
    for (let left = len; left > 0; left -= 4 * MiB) yield randomBytes(Math.min(left, 4 * MiB))
  }
  await pipeline(Readable.from(gen()), await s.createWriteStream(id, { start }))
}

const root = path.join(t.testdir(), 'drives')
const storages: Record<Exclude<CopyMethod, 'auto'> | 'cp-sparse-auto', LocalDriveStorage> = {
  cp: new LocalDriveStorage({ root, copyMethod: 'cp', durable: false, progressIntervalMs: 20 }),
  'cp-sparse-auto': new LocalDriveStorage({ root, copyMethod: 'cp', cpSparse: 'auto', durable: false, progressIntervalMs: 20 }),
  node: new LocalDriveStorage({ root, copyMethod: 'node', durable: false, progressIntervalMs: 20 }),
}
const base = storages.cp

// Sparse source: 256 MiB + 517 bytes with a few data regions, some unaligned, one at the very end,
// plus an explicitly written zero region (allocated in the source, may become a hole in copies).
const sparseId = randomUUID()
const sparseSize = 256 * MiB + 517
let sparseHash = ''
let sparseAllocated = 0

// Dense source: 512 MiB of random data, big enough that copying it takes a few hundred ms.
const denseId = randomUUID()
const denseSize = 512 * MiB
let denseHash = ''

t.before(async () => {
  await base.create(sparseId, sparseSize)
  await writeRandom(base, sparseId, 0, MiB)
  await writeRandom(base, sparseId, 100 * MiB + 12_345, 300 * KiB + 7)
  await writeRandom(base, sparseId, sparseSize - 5000, 5000)
  const w = await base.openForWrite(sparseId)
  await w.write(Buffer.alloc(64 * KiB), 200 * MiB)
  await w.close()
  sparseHash = await sha256(base, sparseId)
  sparseAllocated = (await base.stat(sparseId)).allocated
  await base.create(denseId, denseSize)
  await writeRandom(base, denseId, 0, denseSize)
  denseHash = await sha256(base, denseId)
})

t.test('source fixture is what the tests assume', async t => {
  const st = await base.stat(sparseId)
  t.equal(st.size, sparseSize)
  t.ok(st.allocated >= MiB + 300 * KiB, 'sparse source holds data')
  t.ok(st.allocated < 4 * MiB, `sparse source is sparse (${st.allocated})`)
  const dense = await base.stat(denseId)
  t.ok(dense.allocated >= denseSize && dense.allocated <= denseSize + SLACK, 'dense source fully allocated')
})

for (const method of ['cp', 'cp-sparse-auto', 'node'] as const) {
  const s = storages[method]

  t.test(`${method}: sparse copy is byte-identical and stays sparse`, async t => {
    const dst = randomUUID()
    await s.copy(sparseId, dst)
    const st = await s.stat(dst)
    t.equal(st.size, sparseSize, 'same size')
    t.equal(await sha256(s, dst), sparseHash, 'same sha256')
    t.ok(st.allocated <= sparseAllocated + SLACK, `dst allocated ${st.allocated} <= src ${sparseAllocated} + slack`)
    t.ok(st.allocated >= MiB + 300 * KiB, 'data blocks are allocated')
    t.notOk(existsSync(`${s.path(dst)}.partial`), 'no partial left')
    await s.delete(dst)
  })

  t.test(`${method}: copy to a larger size`, async t => {
    const dst = randomUUID()
    const size = sparseSize + 64 * MiB + 3
    await s.copy(sparseId, dst, { size })
    const st = await s.stat(dst)
    t.equal(st.size, size, 'extended to exact size')
    t.equal(await sha256(s, dst, 0, sparseSize - 1), sparseHash, 'source bytes identical')
    t.equal(await sha256(s, dst, sparseSize), sha256OfZeros(size - sparseSize), 'extension reads zeros')
    t.ok(st.allocated <= sparseAllocated + SLACK, 'extension allocates nothing')

    const small = randomUUID()
    await s.copy(sparseId, small, { size: 4096 })
    t.equal((await s.stat(small)).size, sparseSize, 'a smaller size is ignored (never drops data)')
    await s.delete(dst)
    await s.delete(small)
  })

  t.test(`${method}: progress is monotonic and ends at the source's allocated bytes`, async t => {
    const dst = randomUUID()
    const calls: Array<[number, number]> = []
    // the total is the source's allocated bytes clamped to its size (st_blocks also counts
    // extent-tree blocks), and delayed allocation may still lower it a little while the source
    // is written back: allow SLACK below the source's data size.
    await s.copy(denseId, dst, { onProgress: (d, total) => calls.push([d, total]) })
    t.ok(calls.length >= 2, `called ${calls.length} times`)
    const total = calls[0][1]
    t.ok(total >= denseSize - SLACK && total <= denseSize, `total ${total} = source allocated bytes, at most its size`)
    t.ok(calls.every(([, tt]) => tt === total), 'total constant')
    t.same(calls[0], [0, total], 'starts at 0')
    t.same(calls[calls.length - 1], [total, total], 'ends at total')
    t.ok(calls.every(([d], i) => i === 0 || d >= calls[i - 1][0]), 'monotonic')
    t.ok(calls.every(([d]) => d <= total), 'never above total')
    t.ok(calls.some(([d]) => d > 0 && d < total), 'reports intermediate progress')
    t.equal(await sha256(s, dst), denseHash, 'dense copy identical')

    const sparseCalls: Array<[number, number]> = []
    const dst2 = randomUUID()
    await s.copy(sparseId, dst2, { onProgress: (d, total) => sparseCalls.push([d, total]) })
    const sparseTotal = sparseCalls[0][1]
    t.ok(Math.abs(sparseTotal - sparseAllocated) <= SLACK, `sparse: total ${sparseTotal} is the allocated bytes (${sparseAllocated}), not the nominal size`)
    t.same(sparseCalls[sparseCalls.length - 1], [sparseTotal, sparseTotal], 'sparse: ends at total')
    await s.delete(dst)
    await s.delete(dst2)
  })

  t.test(`${method}: abort mid-copy rejects ABORTED within 1 s and leaves nothing`, async t => {
    const dst = randomUUID()
    const ac = new AbortController()
    let abortedAt = 0
    let doneAtAbort = -1
    let callsAfterAbort = 0
    const fallback = setTimeout(() => { abortedAt ||= Date.now(); ac.abort() }, 150)
    const p = s.copy(denseId, dst, {
      signal: ac.signal,
      onProgress: (d, total) => {
        if (abortedAt > 0) callsAfterAbort++
        if (abortedAt === 0 && d > 0 && d < total) {
          doneAtAbort = d
          abortedAt = Date.now()
          ac.abort()
        }
      },
    })
    const err = await expectCode(t, p, 'ABORTED', 'aborted copy')
    clearTimeout(fallback)
    const elapsed = Date.now() - abortedAt
    t.ok(abortedAt > 0, 'abort was triggered')
    t.ok(elapsed < 1000, `rejected ${elapsed} ms after abort`)
    t.equal(callsAfterAbort, 0, 'the copy stopped: no progress after the abort')
    t.equal((err as Error).name, 'AbortError', 'AbortError-like')
    if (doneAtAbort < 0) t.comment('aborted by the 150 ms timer, before any intermediate progress')
    t.notOk(await s.exists(dst), 'no dst')
    t.ok(await noFilesOf(s, dst), 'no dst or partial file')

    // Already-aborted signal: nothing happens at all.
    await expectCode(t, s.copy(denseId, dst, { signal: AbortSignal.abort() }), 'ABORTED', 'pre-aborted')
    t.ok(await noFilesOf(s, dst), 'nothing created')

    // And the copy can be run again afterwards.
    await s.copy(sparseId, dst)
    t.equal(await sha256(s, dst), sparseHash, 'restarted copy identical')
    await s.delete(dst)
  })

  t.test(`${method}: replaces a stale partial and an existing dst`, async t => {
    const dst = randomUUID()
    await s.create(dst, 10 * MiB)
    await writeRandom(s, dst, 0, MiB)
    await writeFile(`${s.path(dst)}.partial`, 'garbage from an interrupted attempt')
    await s.copy(sparseId, dst)
    t.equal((await s.stat(dst)).size, sparseSize)
    t.equal(await sha256(s, dst), sparseHash, 'identical')
    t.notOk(existsSync(`${s.path(dst)}.partial`), 'stale partial gone')
    await s.delete(dst)
  })

  t.test(`${method}: a throwing onProgress stops the copy with its error`, async t => {
    const dst = randomUUID()
    const boom = new Error('boom')
    await t.rejects(s.copy(denseId, dst, { onProgress: (d) => { if (d > 0) throw boom } }), boom)
    t.ok(await noFilesOf(s, dst), 'nothing left')
  })
}

t.test('copy errors', async t => {
  const dst = randomUUID()
  await expectCode(t, base.copy(randomUUID(), dst), 'NOT_FOUND', 'missing source')
  await expectCode(t, base.copy(sparseId, sparseId), 'INVALID_ID', 'copy onto itself')
  t.ok(await noFilesOf(base, dst), 'nothing created')

  const first = base.copy(denseId, dst)
  await expectCode(t, base.copy(sparseId, dst), 'EXISTS', 'concurrent copy to the same dst')
  await first
  t.equal(await sha256(base, dst), denseHash, 'first copy unaffected')
  await base.delete(dst)
})

t.test('auto falls back to the Node copy when cp is missing or lacks the options', async t => {
  const dir = t.testdir({
    'cp-old': '#!/bin/sh\necho "cp: unrecognized option \'--sparse=always\'" >&2\nexit 1\n',
    'cp-bsd': '#!/bin/sh\necho "cp: illegal option -- -" >&2\nexit 64\n',
    'cp-enospc': '#!/bin/sh\n: > "$6"\necho "cp: error writing \'$6\': No space left on device" >&2\nexit 1\n',
  })
  for (const f of ['cp-old', 'cp-bsd', 'cp-enospc']) await chmod(path.join(dir, f), 0o755)

  for (const cpCommand of [path.join(dir, 'does-not-exist'), path.join(dir, 'cp-old'), path.join(dir, 'cp-bsd')]) {
    const s = new LocalDriveStorage({ root, cpCommand, durable: false })
    const dst = randomUUID()
    await s.copy(sparseId, dst)
    t.equal(await sha256(s, dst), sparseHash, `${path.basename(cpCommand)}: identical`)
    t.ok((await s.stat(dst)).allocated <= sparseAllocated + SLACK, `${path.basename(cpCommand)}: sparse`)
    await s.delete(dst)

    const forced = new LocalDriveStorage({ root, cpCommand, copyMethod: 'cp', durable: false })
    await expectCode(t, forced.copy(sparseId, dst), 'IO', `${path.basename(cpCommand)}: copyMethod cp refuses to fall back`)
    t.ok(await noFilesOf(s, dst), 'nothing left')
  }

  // A real cp failure is an error, not a reason to silently try something else.
  const s = new LocalDriveStorage({ root, cpCommand: path.join(dir, 'cp-enospc'), durable: false })
  const dst = randomUUID()
  const err = await expectCode(t, s.copy(sparseId, dst), 'IO', 'cp failure')
  t.match((err as Error).message, /No space left/, 'message carries cp stderr')
  t.ok(await noFilesOf(s, dst), 'partial removed')
})

t.test('abort kills a slow cp (and its children) within 1 s', async t => {
  // A cp that would take 5 s; a wrapper shell whose child keeps stderr open.
  const dir = t.testdir({ 'cp-slow': '#!/bin/sh\nsleep 5\nexit 0\n' })
  await chmod(path.join(dir, 'cp-slow'), 0o755)
  const s = new LocalDriveStorage({ root, cpCommand: path.join(dir, 'cp-slow'), copyMethod: 'cp', durable: false })
  const dst = randomUUID()
  const ac = new AbortController()
  setTimeout(() => ac.abort(), 200)
  const started = Date.now()
  await expectCode(t, s.copy(sparseId, dst, { signal: ac.signal }), 'ABORTED', 'slow cp aborted')
  const elapsed = Date.now() - started
  t.ok(elapsed < 1200, `rejected after ${elapsed} ms (abort at 200 ms)`)
  t.ok(await noFilesOf(s, dst), 'nothing left')
})

t.test('durable copy (fsync) works too', async t => {
  const s = new LocalDriveStorage({ root })
  const dst = randomUUID()
  await s.copy(sparseId, dst, { size: sparseSize + 1 })
  t.equal((await s.stat(dst)).size, sparseSize + 1)
  t.equal(await sha256(s, dst, 0, sparseSize - 1), sparseHash)
  await s.delete(dst)
})

t.test('a cp whose service is SIGKILLed dies with it (no copy left writing after the service)', async t => {
  // The "service": a child process copying with a cp that records its pid, then takes 60 s.
  const dir = t.testdir({ 'cp-slow': '#!/bin/sh\necho $$ > "$(dirname "$0")/cp.pid"\nexec sleep 60\n' })
  await chmod(path.join(dir, 'cp-slow'), 0o755)
  const storageRoot = path.join(dir, 'root')
  const script = `
    import { LocalDriveStorage } from ${JSON.stringify(path.resolve('src/storage/index.ts'))}
    const s = new LocalDriveStorage({ root: ${JSON.stringify(storageRoot)}, cpCommand: ${JSON.stringify(path.join(dir, 'cp-slow'))}, copyMethod: 'cp', durable: false })
    await s.create('11111111-1111-4111-8111-111111111111', 4096)
    await s.copy('11111111-1111-4111-8111-111111111111', '22222222-2222-4222-8222-222222222222')
  `
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: 'ignore' })
  const pidFile = path.join(dir, 'cp.pid')
  const deadline = Date.now() + 20_000
  while (!existsSync(pidFile) || (await readFile(pidFile, 'utf8')).trim() === '') {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error('the copy did not start')
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  const cpPid = Number((await readFile(pidFile, 'utf8')).trim())
  const alive = (pid: number) => { try { process.kill(pid, 0); return true } catch { return false } }
  t.ok(alive(cpPid), 'cp runs')
  child.kill('SIGKILL')
  await new Promise(resolve => child.once('exit', resolve))
  const gone = Date.now() + 2000
  while (alive(cpPid) && Date.now() < gone) await new Promise(resolve => setTimeout(resolve, 50))
  const stillAlive = alive(cpPid)
  if (stillAlive) process.kill(cpPid, 'SIGKILL')
  t.notOk(stillAlive, 'cp is gone within 2 s of the service\'s SIGKILL')
})
