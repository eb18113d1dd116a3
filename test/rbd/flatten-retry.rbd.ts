// A flatten (or a copy, which flattens its partial image) that detached its image from the parent
// and then failed in its last steps, the cluster not answering, leaves nothing for ever: the
// retry lets the parent's snapshot go (and a hidden parent, a deleted drive kept for its clones,
// with it) and turns the object map back on. What is left to do is kept in the image's flatten
// mark (`clonejobs.flattening`), which now names the parent's snapshot. Each failure is one call
// of a wrapper `rbd` answering as an unreachable cluster does. Run by `npm run test:rbd`.
import { execFileSync } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { RbdDriveStorage, StorageError } from '../../src/storage/index.ts'
import { flattenMarkValue, parseFlattenMark } from '../../src/storage/rbd.ts'
import { readAll, rejectsCode } from '../storage/contract.ts'

const MiB = 1024 * 1024
const GiB = 1024 * MiB
const conf = process.env.CEPH_CONF
if (conf === undefined || conf === '') throw new Error('CEPH_CONF must name the test cluster (npm run test:rbd sets it)')
const pool = process.env.RBD_POOL || 'rbd'
const one = new RbdDriveStorage({ pool, conf })
t.teardown(() => one.close())
const used = new Set<string>()

const rbdCli = (...args: string[]): string => execFileSync('rbd', ['--conf', conf, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
const names = (): string[] => JSON.parse(rbdCli('ls', '--format', 'json', pool)) as string[]
const snaps = (name: string): string[] => (JSON.parse(rbdCli('snap', 'ls', '--format', 'json', `${pool}/${name}`)) as Array<{ name: string }>).map(s => s.name)
const info = (name: string): { id: string, features: string[], flags: string[], parent?: { id: string } } => JSON.parse(rbdCli('info', '--format', 'json', `${pool}/${name}`))
// (an image without metadata lists nothing, not `{}`)
const mark = (name: string): string | undefined => (JSON.parse(rbdCli('image-meta', 'list', '--format', 'json', `${pool}/${name}`).trim() || '{}') as Record<string, string>)['clonejobs.flattening']
const hiddenOf = (id: string): string[] => names().filter(n => n.startsWith(`deleted.${id}.`))

/** A storage whose `rbd` fails, once, the first call whose arguments match `pattern` (bash glob). */
async function failingOnce (t: Test, pattern: string): Promise<RbdDriveStorage> {
  const dir = await mkdtemp(join(tmpdir(), 'clonejobs-rbd-flatten-'))
  const script = join(dir, 'rbd')
  await writeFile(script, `#!/bin/bash
if [[ " $* " == ${pattern} && ! -e '${dir}/failed' ]]; then
  touch '${dir}/failed'; echo 'rbd: error: (110) Connection timed out' >&2; exit 110
fi
exec rbd "$@"
`, { mode: 0o755 })
  const storage = new RbdDriveStorage({ pool, conf, rbdCommand: script })
  t.teardown(async () => { await storage.close(); await rm(dir, { recursive: true, force: true }) })
  return storage
}

async function written (size: number, data: Buffer): Promise<string> {
  const id = randomUUID()
  used.add(id)
  await one.create(id, size)
  const w = await one.openForWrite(id)
  await w.write(data, 0)
  await w.close()
  return id
}

/** A source of `size` holding `data`, and its copy-on-write clone. */
async function cloned (size: number, data: Buffer): Promise<{ src: string, child: string }> {
  const src = await written(size, data)
  const child = randomUUID()
  used.add(child)
  await one.cloneCow(src, child)
  return { src, child }
}

const failed = async (t: Test, p: Promise<unknown>, what: string): Promise<void> => {
  let err: unknown
  await p.catch((e: unknown) => { err = e })
  t.ok(err instanceof StorageError && err.code === 'UNAVAILABLE', `${what} (${String(err)})`)
}

t.test('the flatten mark: written and read back; marks written before it named the parent still read', async t => {
  const id = 'a1b2c3d4e5f6'
  const parent = { id: '0f0e0d0c0b0a', snapshot: `c-${randomUUID()}.3` }
  for (const m of [{ id }, { id, off: ['fast-diff', 'object-map'] }, { id, parent }, { id, off: ['object-map'], parent }]) {
    t.same(parseFlattenMark(flattenMarkValue(m)), m, flattenMarkValue(m))
  }
  t.same(parseFlattenMark(id), { id }, 'an earlier plain mark')
  t.same(parseFlattenMark(`${id}:off:fast-diff,object-map`), { id, off: ['fast-diff', 'object-map'] }, 'an earlier mark with the features turned off')
})

t.test('a flatten that detached its clone but could not let the hidden parent go: the retry lets it go', async t => {
  const data = randomBytes(4 * MiB)
  const { src, child } = await cloned(8 * MiB, data)
  await one.delete(src)
  t.equal(hiddenOf(src).length, 1, 'the deleted source is kept hidden for its clone')
  // the cluster does not answer the first look at the hidden parent's snapshots, after the flatten
  const storage = await failingOnce(t, `*" snap ls ${pool}/deleted.${src}."*`)
  await failed(t, storage.flatten(child), 'the flatten fails')
  t.notOk(info(child).parent, 'after detaching the clone')
  t.equal(hiddenOf(src).length, 1, 'its hidden parent is left')
  t.match(mark(child), new RegExp(`^${info(child).id};parent=[0-9a-f]+@c-${child}$`), 'the mark names the snapshot to let go')
  await storage.flatten(child)
  t.same(hiddenOf(src), [], 'the retry removes the hidden parent, its last child flattened')
  t.equal(mark(child), undefined, 'and the mark')
  t.ok((await readAll(one, child, 0, 4 * MiB - 1)).equals(data), 'the flattened clone holds the data')
  await one.delete(child)
})

t.test('a flatten whose job gave up after it detached its clone (the hidden parent not let go): deleting the clone lets it go', async t => {
  const { src, child } = await cloned(8 * MiB, randomBytes(MiB))
  await one.delete(src)
  const storage = await failingOnce(t, `*" snap ls ${pool}/deleted.${src}."*`)
  await failed(t, storage.flatten(child), 'the flatten fails, and is not retried')
  t.notOk(info(child).parent, 'after detaching the clone')
  t.equal(hiddenOf(src).length, 1, 'its hidden parent is left')
  await one.delete(child)
  t.same(hiddenOf(src), [], 'deleting the clone removes the hidden parent its mark names')
  t.notOk(names().includes(child), 'and the clone')
})

t.test('a flatten that could not drop the live parent\'s snapshot: the retry drops it', async t => {
  const { src, child } = await cloned(8 * MiB, randomBytes(MiB))
  const storage = await failingOnce(t, `*" snap ls ${pool}/${src} "*`)
  await failed(t, storage.flatten(child), 'the flatten fails')
  t.notOk(info(child).parent, 'after detaching the clone')
  t.same(snaps(src), [`c-${child}`], 'the source keeps the snapshot made for the clone')
  await storage.flatten(child)
  t.same(snaps(src), [], 'the retry drops it')
  t.equal(mark(child), undefined, 'and the mark')
  await storage.flatten(child)
  t.same(snaps(src), [], 'a flatten of a flattened image is still a no-op')
  await one.delete(child)
  await one.delete(src)
})

t.test('a copy attempt that flattened its partial image but could not drop the source\'s snapshot: the next attempt drops it', async t => {
  const data = randomBytes(4 * MiB)
  const src = await written(8 * MiB, data)
  const dst = await written(8 * MiB, Buffer.alloc(MiB, 0x30))
  const storage = await failingOnce(t, `*" snap ls ${pool}/${src} "*`)
  await failed(t, storage.copy(src, dst, { attempt: 1 }), 'attempt 1 fails')
  t.same(names().filter(n => n.startsWith(`${dst}.partial`)), [], 'its partial image is gone')
  t.same(snaps(src), [`c-${dst}.1`], 'the snapshot it made of the source is left')
  await one.copy(src, dst, { attempt: 2 })
  t.same(snaps(src), [], 'attempt 2 drops it with its own')
  t.ok((await readAll(one, dst, 0, 4 * MiB - 1)).equals(data), 'the copy is in place')
  await one.delete(dst)
  await one.delete(src)
})

t.test('a flatten run with the object map off (after a cut one) that could not turn it back on: the retry does', async t => {
  // large enough for `rbd flatten` to be cut once it reports progress
  const data = randomBytes(8 * MiB)
  const { src, child } = await cloned(10 * GiB, data)
  const ac = new AbortController()
  // every progress line reported (not one per 200 ms): on a quick cluster the whole flatten could
  // end inside the first interval, never reporting progress past 0, and so never be cut
  const unthrottled = new RbdDriveStorage({ pool, conf, progressIntervalMs: 0 })
  await rejectsCode(t, unthrottled.flatten(child, { signal: ac.signal, onProgress: (d) => { if (d > 0) ac.abort() } }), 'ABORTED', 'the first flatten is cut')
  const storage = await failingOnce(t, `*" feature enable ${pool}/${child} "*`)
  await failed(t, storage.flatten(child), 'the second flatten (object map off) fails turning it back on')
  t.notOk(info(child).parent, 'after detaching the clone')
  t.notOk(info(child).features.includes('object-map'), 'the object map is left off')
  t.same(snaps(src), [`c-${child}`], 'and the source\'s snapshot')
  await storage.flatten(child)
  const after = info(child)
  t.ok(after.features.includes('object-map') && after.features.includes('fast-diff'), 'the retry turns the object map back on')
  t.same(after.flags, [], 'rebuilt (valid)')
  t.same(snaps(src), [], 'drops the source\'s snapshot')
  t.equal(mark(child), undefined, 'and the mark')
  t.ok((await readAll(one, child, 0, 8 * MiB - 1)).equals(data), 'the flattened clone holds the data')
  await one.delete(child)
  await one.delete(src)
})

t.test('nothing of these tests is left in the pool', async t => {
  t.ok(used.size >= 8, 'the ids used were recorded')
  t.same(names().filter(n => [...used].some(id => n.includes(id))), [], 'no image')
})
