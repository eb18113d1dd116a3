// RBD copies are fenced as local ones are (test/storage/fenced-copy.test.ts): each attempt of the
// copying job clones into its own partial image (`<image>.partial.<attempt>`, of its own snapshot of
// the source), so a stale attempt in another process never removes or replaces a newer attempt's;
// partials of earlier attempts are removed, one still open elsewhere is left to its owner, and a
// delete removes every partial. A removal whose image another remover removed meanwhile is done;
// in one process an image being removed is left to its remover (never two `rbd rm` of it at once),
// and an `rbd rm` still waiting once its image is gone from the pool and its trash is ended.
// Run by `npm run test:rbd`.
import { execFileSync, spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import t from 'tap'
import type { Test } from 'tap'
import { RbdDriveStorage, StorageError } from '../../src/storage/index.ts'
import { readAll } from '../storage/contract.ts'
import { heldFence } from '../helpers/gate.ts'

const MiB = 1024 * 1024
const conf = process.env.CEPH_CONF
if (conf === undefined || conf === '') throw new Error('CEPH_CONF must name the test cluster (npm run test:rbd sets it)')
const pool = process.env.RBD_POOL || 'rbd'
// two storages on one pool: two service processes
const one = new RbdDriveStorage({ pool, conf })
const two = new RbdDriveStorage({ pool, conf })
const used = new Set<string>()

class Stale extends Error {}

const rbdCli = (...args: string[]): string => execFileSync('rbd', ['--conf', conf, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })

/** Every image and snapshot name in the pool. */
function poolNames (): string[] {
  const names = JSON.parse(rbdCli('ls', '--format', 'json', pool)) as string[]
  const out: string[] = []
  for (const name of names) {
    out.push(name)
    try {
      for (const s of JSON.parse(rbdCli('snap', 'ls', '--format', 'json', `${pool}/${name}`)) as Array<{ name: string }>) out.push(`${name}@${s.name}`)
    } catch {
      // removed meanwhile by another test file
    }
  }
  return out.sort()
}

async function setup () {
  const make = async (fill: number) => {
    const id = randomUUID()
    used.add(id)
    await one.create(id, 4 * MiB)
    const w = await one.openForWrite(id)
    await w.write(Buffer.alloc(4 * MiB, fill), 0)
    await w.close()
    return id
  }
  const a = await make(0x41)
  const b = await make(0x42)
  const dst = await make(0x30)
  const partials = () => (JSON.parse(rbdCli('ls', '--format', 'json', pool)) as string[]).filter(n => n.startsWith(`${dst}.partial`)).sort()
  const content = async () => (await readAll(one, dst, 0, 0))[0]
  const snaps = (id: string) => (JSON.parse(rbdCli('snap', 'ls', '--format', 'json', `${pool}/${id}`)) as Array<{ name: string }>).map(s => s.name)
  const cleanup = async () => { for (const id of [a, b, dst]) await one.delete(id) }
  return { a, b, dst, partials, content, snaps, cleanup }
}

t.test('a refused fence never renames the copy into place', async t => {
  const { a, dst, partials, content, snaps, cleanup } = await setup()
  const refusal = new Stale('this attempt is stale')
  let err: unknown
  await one.copy(a, dst, { attempt: 1, fenced: async () => { throw refusal } }).catch(e => { err = e })
  t.equal(err, refusal, 'copy rejects with the guard\'s own refusal')
  t.equal(await content(), 0x30, 'the destination keeps its data')
  t.same(partials(), [], 'the partial image is removed')
  t.same(snaps(a), [], 'and the source\'s snapshot with it')
  await cleanup()
})

t.test('a stale attempt cannot remove a newer attempt\'s partial image', async t => {
  const { a, b, dst, partials, content, snaps, cleanup } = await setup()
  const held = heldFence()
  // attempt 2 (the job's current attempt) has its copy complete and waits at its fence
  const fresh = two.copy(b, dst, { attempt: 2, fenced: held.fenced })
  await held.reached
  t.same(partials(), [`${dst}.partial.2`], 'attempt 2 clones into its own partial image')
  // attempt 1, still running in another process, starts its copy late and is refused at its fence
  let err: unknown
  await one.copy(a, dst, { attempt: 1, fenced: async () => { throw new Stale('stale') } }).catch(e => { err = e })
  t.ok(err instanceof Stale, `the stale attempt is refused (${String(err)})`)
  t.same(partials(), [`${dst}.partial.2`], 'and left attempt 2\'s partial alone')
  t.same(snaps(a), [], 'the stale attempt\'s snapshot of its source is gone')
  held.release()
  await fresh
  t.equal(await content(), 0x42, 'attempt 2\'s copy is in place')
  t.same(partials(), [])
  t.same(snaps(b), [], 'attempt 2\'s snapshot went with its flatten')
  await cleanup()
})

t.test('partials of earlier attempts are removed, an open one is left to its owner; delete removes every partial', async t => {
  const { a, dst, partials, content, cleanup } = await setup()
  for (const name of [`${dst}.partial`, `${dst}.partial.1`, `${dst}.partial.2`, `${dst}.partial.5`]) rbdCli('create', '--size', '1M', `${pool}/${name}`)
  // attempt 2 is still writing to its partial in another process: the image is open (watched)
  const writer = spawn('rbd', ['--conf', conf, 'bench', '--io-type', 'write', '--io-size', '4K', '--io-threads', '1', '--io-total', '1G', '--io-pattern', 'rand', `${pool}/${dst}.partial.2`], { stdio: 'ignore' })
  const writerDone = new Promise(resolve => writer.once('exit', resolve))
  try {
    for (let i = 0; ; i++) {
      const status = JSON.parse(rbdCli('status', '--format', 'json', `${pool}/${dst}.partial.2`)) as { watchers?: unknown[] }
      if ((status.watchers ?? []).length > 0) break
      if (i > 100) throw new Error('the writer never opened the image')
      await delay(100)
    }
    let renamedWith: string[] = []
    const t0 = Date.now()
    await one.copy(a, dst, { attempt: 3, fenced: async (commit) => { renamedWith = partials(); await commit() } })
    t.same(renamedWith, [`${dst}.partial.2`, `${dst}.partial.3`, `${dst}.partial.5`],
      'earlier attempts\' closed partials were gone before the rename; the open one and a newer one are not touched')
    t.ok(Date.now() - t0 < 30_000, `the copy did not wait for the open partial (${Date.now() - t0} ms)`)
    t.equal(await content(), 0x41)
    t.same(partials(), [`${dst}.partial.2`, `${dst}.partial.5`])
  } finally {
    writer.kill('SIGTERM')
    await writerDone
  }
  await one.delete(dst)
  t.same(partials(), [], 'delete removes every partial, the newer attempt\'s too')
  t.notOk(await one.exists(dst))
  await cleanup()
})

/**
 * A storage of its own whose rbd command is `body(dir)` (bash, `dir` a folder of its own) run before the real rbd: the
 * cluster's own answers, with another remover's step made at a chosen point.
 */
async function storageWith (t: Test, body: (dir: string) => string, options: { removalCheckMs?: number } = {}): Promise<{ storage: RbdDriveStorage, dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'clonejobs-rbd-race-'))
  const script = join(dir, 'rbd')
  await writeFile(script, `#!/bin/bash\n${body(dir)}\nexec rbd "$@"\n`, { mode: 0o755 })
  const storage = new RbdDriveStorage({ pool, conf, rbdCommand: script, ...options })
  t.teardown(async () => { await storage.close(); await rm(dir, { recursive: true, force: true }) })
  return { storage, dir }
}

t.test('a partial image removed by another remover between two steps of this removal: the copy goes on', async t => {
  const { a, dst, partials, content, cleanup } = await setup()
  rbdCli('create', '--size', '1M', `${pool}/${dst}.partial.1`)
  // another process's remover (attempt 1's own cleanup) removes attempt 1's partial just after
  // this copy's remover read its info, before it lists its snapshots
  const { storage, dir } = await storageWith(t, dir => `if [[ " $* " == *" snap ls ${pool}/${dst}.partial.1 "* ]]; then
  rbd --conf '${conf}' rm --no-progress '${pool}/${dst}.partial.1' >/dev/null 2>&1 && echo removed >> '${dir}/raced'
fi`)
  await storage.copy(a, dst, { attempt: 2 })
  t.equal(await readFile(join(dir, 'raced'), 'utf8'), 'removed\n', 'the other remover removed it between the two steps')
  t.equal(await content(), 0x41, 'the copy is in place')
  t.same(partials(), [])
  await cleanup()
})

t.test('in one process, a newer attempt leaves a partial image that is being removed to its remover: never two removals of one image at once', async t => {
  const { a, b, dst, partials, content, snaps, cleanup } = await setup()
  // each `rbd rm` of attempt 1's partial is written down, and held until the file 'go' exists
  const { storage, dir } = await storageWith(t, dir => `if [[ " $* " == *" rm --no-progress ${pool}/${dst}.partial.1 "* ]]; then
  echo rm >> '${dir}/removals'
  while [[ ! -e '${dir}/go' ]]; do sleep 0.05; done
fi`)
  const removals = async () => (await readFile(join(dir, 'removals'), 'utf8').catch(() => '')).split('\n').filter(l => l !== '').length
  let started!: (copy: { fresh: Promise<void> }) => void
  const attempt2 = new Promise<{ fresh: Promise<void> }>(resolve => { started = resolve })
  let err: unknown
  // attempt 1 is refused at its fence (a takeover in this same process): its cleanup removes its partial
  const stale = storage.copy(a, dst, {
    attempt: 1,
    fenced: async () => {
      // attempt 2 starts as attempt 1 is refused: it finds attempt 1's partial in the pool
      started({ fresh: storage.copy(b, dst, { attempt: 2 }) })
      throw new Stale('stale')
    }
  }).catch(e => { err = e })
  const { fresh } = await attempt2
  for (let i = 0; await removals() === 0; i++) {
    if (i > 400) throw new Error('attempt 1\'s removal of its partial never started')
    await delay(50)
  }
  // attempt 2 does not wait for that removal; without it, its own `rbd rm` of the image is held too
  const settled = await Promise.race([fresh.then(() => 'done'), delay(30_000).then(() => 'still waiting')])
  await writeFile(join(dir, 'go'), '')
  await stale
  await fresh
  t.equal(settled, 'done', 'attempt 2\'s copy finished while attempt 1 was removing its partial')
  t.ok(err instanceof Stale, `attempt 1 is refused (${String(err)})`)
  t.equal(await removals(), 1, 'attempt 1\'s partial had one `rbd rm`, its own remover\'s')
  t.equal(await content(), 0x42, 'attempt 2\'s copy is in place')
  t.same(partials(), [], 'and attempt 1\'s partial is gone')
  t.same(snaps(a), [])
  t.same(snaps(b), [])
  await cleanup()
})

/** The id of image `name` in the pool (its header's, which the trash lists). */
const imageIdOf = (name: string): string => (JSON.parse(rbdCli('info', '--format', 'json', `${pool}/${name}`)) as { id: string }).id
const inTrash = (imageId: string): boolean => (JSON.parse(rbdCli('trash', 'ls', '--all', '--format', 'json', pool)) as Array<{ id: string }>).some(e => e.id === imageId)

/** A new empty 4 MiB image, made with the CLI. */
function newImage (): { id: string, imageId: string } {
  const id = randomUUID()
  used.add(id)
  rbdCli('create', '--size', '4M', `${pool}/${id}`)
  return { id, imageId: imageIdOf(id) }
}

t.test('an `rbd rm` that waits on after another process removed its image is ended: the removal is done', async t => {
  const { id, imageId } = newImage()
  // the other process's `rbd rm` removes the image; this one then waits for its lock without end
  // (as Ceph 16's did once in 15 tries: "watcher not registered - delaying request"); a later rm of
  // the name (which clears a directory entry left behind) finds nothing and ends
  const { storage, dir } = await storageWith(t, dir => `if [[ " $* " == *" rm --no-progress ${pool}/${id} "* && ! -e '${dir}/stuck' ]]; then
  touch '${dir}/stuck'
  rbd --conf '${conf}' rm --no-progress '${pool}/${id}' >/dev/null 2>&1 && echo removed >> '${dir}/raced'
  exec sleep 600
fi`, { removalCheckMs: 200 })
  const removal = storage.delete(id)
  const settled = await Promise.race([removal.then(() => 'done', (err: unknown) => `failed: ${String(err)}`), delay(30_000).then(() => 'still waiting')])
  if (settled === 'still waiting') await storage.close()
  await removal.catch(() => {})
  t.equal(settled, 'done', 'the removal is done once the image is gone from the pool and its trash')
  t.equal(await readFile(join(dir, 'raced'), 'utf8'), 'removed\n', 'the other remover removed it')
  t.notOk(await one.exists(id))
  t.notOk(inTrash(imageId), 'nor in the trash')
})

t.test('an `rbd rm` still at work (its image in the trash, objects going) is never cut short', async t => {
  const { id, imageId } = newImage()
  // a removal's steps, slowed: out of the pool into the trash, 2 s of work (ten checks), then gone
  const { storage, dir } = await storageWith(t, dir => `if [[ " $* " == *" rm --no-progress ${pool}/${id} "* ]]; then
  rbd --conf '${conf}' trash mv '${pool}/${id}' || exit 1
  sleep 2
  rbd --conf '${conf}' trash rm --no-progress '${pool}/${imageId}' || exit 1
  echo finished >> '${dir}/finished'
  exit 0
fi`, { removalCheckMs: 200 })
  await storage.delete(id)
  t.equal(await readFile(join(dir, 'finished'), 'utf8').catch(() => 'ended before it finished'), 'finished\n', 'the rm ran to its end')
  t.notOk(await one.exists(id))
  t.notOk(inTrash(imageId), 'nothing is left in the trash')
})

t.test('two processes remove one image at once, twelve times: every removal is done, nothing is left', async t => {
  // the real race, timed by the cluster: one of two `rbd rm` at once failed with ESTALE in 8 of 30
  // tries (Ceph 16), and one could wait without end; each `rbd rm`'s exit is written down ('ended':
  // ended by its storage once the image was gone)
  const script = (dir: string) => `if [[ " $* " == *" rm --no-progress "* ]]; then
  rbd "$@" & pid=$!
  trap 'kill $pid; echo ended >> '"'${dir}/exits'"'; exit 143' TERM
  wait $pid; rc=$?; echo "$rc" >> '${dir}/exits'; exit $rc
fi`
  const first = await storageWith(t, script, { removalCheckMs: 500 })
  const second = await storageWith(t, script, { removalCheckMs: 500 })
  const failures: string[] = []
  for (let i = 0; i < 12; i++) {
    const id = randomUUID()
    used.add(id)
    rbdCli('create', '--size', '8M', `${pool}/${id}`)
    const writer = await one.openForWrite(id)
    await writer.write(Buffer.alloc(8 * MiB, 0x43), 0)
    await writer.close()
    const imageId = imageIdOf(id)
    const both = Promise.allSettled([first.storage.delete(id), second.storage.delete(id)])
    const settled = await Promise.race([both, delay(60_000).then(() => null)])
    if (settled === null) failures.push(`${i}: still removing after 60 s`)
    else for (const r of settled) if (r.status === 'rejected') failures.push(`${i}: ${String(r.reason)}`)
    if (await one.exists(id)) failures.push(`${i}: the image is left`)
    if (inTrash(imageId)) failures.push(`${i}: the image is left in the trash`)
  }
  t.same(failures, [], 'each removal of the pair is done, and the image gone')
  const exits = async (dir: string) => (await readFile(join(dir, 'exits'), 'utf8').catch(() => '')).split('\n').filter(l => l !== '')
  const all = [...await exits(first.dir), ...await exits(second.dir)]
  t.ok(all.length >= 12, `the rm processes' exits (${all.length}) were written down`)
  t.comment(`rm exits: ${[...new Set(all)].map(code => `${code} x${all.filter(c => c === code).length}`).join(', ')}`)
})

t.test('a removal that failed between removing a clone and letting its hidden parent go: its retry lets it go', async t => {
  const src = randomUUID()
  const child = randomUUID()
  used.add(src)
  used.add(child)
  await one.create(src, 4 * MiB)
  await one.cloneCow(src, child)
  await one.delete(src)
  const hidden = () => (JSON.parse(rbdCli('ls', '--format', 'json', pool)) as string[]).filter(n => n.startsWith(`deleted.${src}.`))
  t.equal(hidden().length, 1, 'the deleted source is kept hidden for its child')
  // the cluster does not answer the first look at the hidden parent's snapshots, after the child went
  const { storage } = await storageWith(t, dir => `if [[ " $* " == *" snap ls ${pool}/deleted.${src}."* && ! -e '${dir}/failed' ]]; then
  touch '${dir}/failed'; echo 'rbd: error: (110) Connection timed out' >&2; exit 110
fi`)
  let err: unknown
  await storage.delete(child).catch(e => { err = e })
  t.ok(err instanceof StorageError, `the removal fails (${String(err)})`)
  t.notOk(await one.exists(child), 'after the child went')
  t.equal(hidden().length, 1, 'its hidden parent is left')
  await storage.delete(child)
  t.same(hidden(), [], 'the retry removes the hidden parent, its last child gone')
  t.same(poolNames().filter(n => n.includes(src) || n.includes(child)), [], 'and nothing of either is left')
})

/** Whether the pool's directory lists `name` (with or without an image behind it). */
const listed = (name: string): boolean => (JSON.parse(rbdCli('ls', '--format', 'json', pool)) as string[]).includes(name)
/** Shell lines listing `name` (of image id `imageId`) in the pool's directory again, with no image behind it: the state two names were found in after a run of these tests. */
const listBack = (name: string, imageId: string): string => [[`name_${name}`, imageId], [`id_${imageId}`, name]]
  .map(([key, value]) => `printf '\\x${value.length.toString(16).padStart(2, '0')}\\x00\\x00\\x00%s' '${value}' | rados --conf '${conf}' -p '${pool}' setomapval rbd_directory '${key}'`).join('\n')

t.test('a removal whose `rbd rm` failed as another remover took the image, the name left listed: the name goes too', async t => {
  const { id, imageId } = newImage()
  // the other remover removes the image; this rm fails (ESTALE) and the name is listed again
  const { storage, dir } = await storageWith(t, dir => `if [[ " $* " == *" rm --no-progress ${pool}/${id} "* && ! -e '${dir}/raced' ]]; then
  touch '${dir}/raced'
  rbd --conf '${conf}' rm --no-progress '${pool}/${id}' >/dev/null 2>&1 || exit 1
${listBack(id, imageId)}
  echo 'librbd::api::Trash: move: error setting trash image state: (116) Stale file handle' >&2; exit 116
fi`)
  await storage.delete(id)
  t.ok(await readFile(join(dir, 'raced')).then(() => true, () => false), 'the other remover took the image')
  t.notOk(await one.exists(id), 'the image is gone')
  t.notOk(listed(id), 'and its name is not listed with nothing behind it')
})

t.test('a delete of a name listed with no image behind it removes the name', async t => {
  const { id, imageId } = newImage()
  rbdCli('rm', '--no-progress', `${pool}/${id}`)
  execFileSync('bash', ['-c', listBack(id, imageId)])
  t.ok(listed(id), 'listed')
  t.notOk(await one.exists(id), 'with no image behind it')
  await one.delete(id)
  t.notOk(listed(id), 'no longer listed')
})

t.test('nothing of these tests is left in the pool', async t => {
  t.ok(used.size >= 15, 'the ids used were recorded')
  t.same(poolNames().filter(n => [...used].some(id => n.includes(id))), [], 'no image or snapshot')
})
