// Local storage copies are fenced (issue 12 item 1): the rename of a finished copy into place runs
// through the caller's guard (the job's ctx.fenced), so a stale attempt never replaces the drive,
// and each attempt writes its own partial file (`<image>.partial.<attempt>`), so attempts in two
// processes never share or delete each other's; partials of earlier attempts are cleaned. The step
// a guard allows (a copy's rename, a resize that grows, a delete) is made at once, not queued for a
// thread of Node's pool.
import { execFileSync } from 'node:child_process'
import { closeSync, existsSync, openSync, readFileSync, statSync } from 'node:fs'
import { mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { randomUUID } from 'node:crypto'
import path from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { LocalDriveStorage } from '../../src/storage/index.ts'
import { heldFence } from '../helpers/gate.ts'

const MiB = 1024 * 1024

class Stale extends Error {}

async function setup (t: Test) {
  const root = path.join(t.testdir(), 'drives')
  // two storages on one folder: two service processes
  const one = new LocalDriveStorage({ root, durable: false, copyMethod: 'node' })
  const two = new LocalDriveStorage({ root, durable: false, copyMethod: 'node' })
  const make = async (fill: number) => {
    const id = randomUUID()
    await one.create(id, 4 * MiB)
    await writeFile(one.path(id), Buffer.alloc(4 * MiB, fill))
    return id
  }
  const a = await make(0x41)
  const b = await make(0x42)
  const dst = await make(0x30)
  const partials = async () => (await readdir(path.dirname(one.path(dst)))).filter(n => n.startsWith(`${dst}.img.partial`)).sort()
  const content = async () => (await readFile(one.path(dst)))[0]
  return { root, one, two, a, b, dst, partials, content }
}

t.test('a refused fence never renames the copy into place', async t => {
  const { one, a, dst, partials, content } = await setup(t)
  const refusal = new Stale('this attempt is stale')
  let err: unknown
  await one.copy(a, dst, { attempt: 1, fenced: async () => { throw refusal } }).catch(e => { err = e })
  t.equal(err, refusal, 'copy rejects with the guard\'s own refusal')
  t.equal(await content(), 0x30, 'the destination keeps its data')
  t.same(await partials(), [], 'the partial file is removed')
})

t.test('a stale attempt cannot remove a newer attempt\'s partial file', async t => {
  const { one, two, a, b, dst, partials, content } = await setup(t)
  const held = heldFence()
  // attempt 2 (the job's current attempt) has its copy complete and waits at its fence
  const fresh = two.copy(b, dst, { attempt: 2, fenced: held.fenced })
  await held.reached
  t.same(await partials(), [`${dst}.img.partial.2`], 'attempt 2 writes its own partial file')
  // attempt 1, still running in another process, starts its copy late and is refused at its fence
  let err: unknown
  await one.copy(a, dst, { attempt: 1, fenced: async () => { throw new Stale('stale') } }).catch(e => { err = e })
  t.ok(err instanceof Stale, 'the stale attempt is refused')
  t.same(await partials(), [`${dst}.img.partial.2`], 'and left attempt 2\'s partial alone')
  held.release()
  await fresh
  t.equal(await content(), 0x42, 'attempt 2\'s copy is in place')
  t.same(await partials(), [])
})

t.test('partials of earlier attempts are cleaned; delete removes every partial', async t => {
  const { one, a, dst, partials, content } = await setup(t)
  const dir = path.dirname(one.path(dst))
  for (const name of [`${dst}.img.partial`, `${dst}.img.partial.1`, `${dst}.img.partial.2`, `${dst}.img.partial.4`]) await writeFile(path.join(dir, name), 'left over')
  let renamedWith: string[] = []
  await one.copy(a, dst, { attempt: 3, fenced: async (commit) => { renamedWith = await partials(); await commit() } })
  t.same(renamedWith, [`${dst}.img.partial.3`, `${dst}.img.partial.4`], 'earlier attempts\' partials were gone before the rename; a newer one is not touched')
  t.equal(await content(), 0x41)
  await one.delete(dst)
  t.same(await partials(), [], 'delete removes the newer attempt\'s partial too')
  t.notOk(existsSync(one.path(dst)))
})

/**
 * A guard that allows the step and, as it does, holds every thread of Node's pool (each opening a
 * FIFO, which waits for its other end; other copies' fsyncs could hold them so for seconds) for
 * 100 ms: `look` runs then, with the threads still held, and they go on. `released`, after the
 * step's call has returned: the guard was asked, and the threads have gone on.
 */
async function holdingPool (t: Test, look: () => void): Promise<{ guard: () => void, released: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'clonejobs-fifo-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const fifos = Array.from({ length: Number(process.env.UV_THREADPOOL_SIZE ?? 4) }, (_, k) => path.join(dir, `fifo-${k}`))
  execFileSync('mkfifo', fifos)
  let held: Promise<void> | undefined
  const guard = () => {
    const blockers = fifos.map(f => open(f, 'r'))
    held = new Promise(resolve => setTimeout(resolve, 100)).then(async () => {
      look()
      // the other ends, opened read-write (which never waits): the threads go on
      for (const f of fifos) closeSync(openSync(f, 'r+'))
      for (const h of await Promise.all(blockers)) await h.close()
    })
  }
  return { guard, released: async () => { t.ok(held, 'the guard was asked'); await held } }
}

t.test('the step right after the guard does not wait for a thread of Node\'s pool: a copy\'s rename, a resize that grows, a delete', async t => {
  const { one, a, dst } = await setup(t)
  let seen: unknown
  const copy = await holdingPool(t, () => { seen = readFileSync(one.path(dst))[0] })
  await one.copy(a, dst, { attempt: 1, guard: copy.guard, fenced: async (commit) => { await commit() } })
  await copy.released()
  t.equal(seen, 0x41, 'the copy was in place as soon as the guard allowed it, every pool thread still held')

  const resize = await holdingPool(t, () => { seen = statSync(one.path(dst)).size })
  await one.resize(dst, 8 * MiB, undefined, resize.guard)
  await resize.released()
  t.equal(seen, 8 * MiB, 'the drive was grown to its new size as soon as the guard allowed it')

  const remove = await holdingPool(t, () => { seen = existsSync(one.path(dst)) })
  await one.delete(dst, remove.guard)
  await remove.released()
  t.equal(seen, false, 'the image was out of its place as soon as the guard allowed it')
  t.same((await readdir(path.dirname(one.path(dst)))).filter(n => n.startsWith(dst)), [], 'and nothing of it is left')
})
