// The storage contract and the copy-on-write extras on a real Ceph cluster. Run by
// `npm run test:rbd` (scripts/test-rbd.sh starts a dev cluster and sets CEPH_CONF).
import { randomBytes, randomUUID } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { writeFileSync, readFileSync } from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { RbdDriveStorage, StorageError } from '../../src/storage/index.ts'
import { readAll, rejectsCode, storageContract } from '../storage/contract.ts'

const MiB = 1024 * 1024
const GiB = 1024 * MiB
const conf = process.env.CEPH_CONF
if (conf === undefined || conf === '') throw new Error('CEPH_CONF must name the test cluster (npm run test:rbd sets it)')
const pool = process.env.RBD_POOL || 'rbd'
const rbd = new RbdDriveStorage({ pool, conf, progressIntervalMs: 20 })
/** Ids this file handed to the storage: other test files share the pool, so only these are checked for leaks. */
const used = new Set<string>()
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const s = new Proxy(rbd, {
  get (target, prop, receiver) {
    const v = Reflect.get(target, prop, receiver) as unknown
    if (typeof v !== 'function') return v
    return (...args: unknown[]) => {
      // only real drive ids: the contract also passes bad ids ('', '../x') that would match every name
      for (const a of args) if (typeof a === 'string' && UUID.test(a)) used.add(a)
      return (v as (...a: unknown[]) => unknown).apply(target, args)
    }
  }
})

/** Every image and snapshot name in the pool, to prove nothing leaks. */
function poolImages (): string[] {
  let out = ''
  for (let tries = 1; ; tries++) {
    try {
      out = execFileSync('rbd', ['--conf', conf!, 'ls', '--long', '--format', 'json', pool], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
      break
    } catch (err) {
      // `ls --long` opens every image: one that another test file removes meanwhile fails it
      if (tries >= 10) throw err
    }
  }
  return (JSON.parse(out) as Array<{ image: string, snapshot?: string }>).map(i => i.snapshot ? `${i.image}@${i.snapshot}` : i.image).sort()
}

const mine = (names: string[]): string[] => names.filter(n => [...used].some(id => n.includes(id)))
const before = poolImages()

storageContract(t, () => s)

t.test('placement: read from the pool; drives fail apart only where copies sit on different hosts', async t => {
  // the dev cluster's pool keeps one copy (size 1) under an OSD rule: every drive on the same disk
  t.equal(await rbd.placement(), 'one-host', 'a one-copy pool')
  // a pool of two copies under a rule over two racks (each holding the one host): spread. The
  // racks sit under a root of their own, so the rbd pool's placement (root default) is untouched
  const tag = randomBytes(4).toString('hex')
  const [root, rule, twoCopies] = [`cj-root-${tag}`, `cj-racks-${tag}`, `cj-two-${tag}`]
  const racks = [`cj-rack-a-${tag}`, `cj-rack-b-${tag}`]
  const ceph = (...args: string[]): string => execFileSync('ceph', ['--conf', conf!, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  const host = (JSON.parse(ceph('osd', 'tree', '--format', 'json')) as { nodes: Array<{ type: string, name: string }> }).nodes.find(n => n.type === 'host')!.name
  t.teardown(() => {
    for (const undo of [
      () => ceph('osd', 'pool', 'rm', twoCopies, twoCopies, '--yes-i-really-really-mean-it'),
      () => ceph('osd', 'crush', 'rule', 'rm', rule),
      ...racks.map(r => () => ceph('osd', 'crush', 'unlink', host, r)),
      ...racks.map(r => () => ceph('osd', 'crush', 'rm', r)),
      () => ceph('osd', 'crush', 'rm', root)
    ]) {
      try { undo() } catch {}
    }
  })
  ceph('osd', 'crush', 'add-bucket', root, 'root')
  for (const r of racks) {
    ceph('osd', 'crush', 'add-bucket', r, 'rack')
    ceph('osd', 'crush', 'move', r, `root=${root}`)
    ceph('osd', 'crush', 'link', host, `rack=${r}`)
  }
  ceph('osd', 'crush', 'rule', 'create-replicated', rule, root, 'rack')
  ceph('osd', 'pool', 'create', twoCopies, '1', '1', 'replicated', rule)
  ceph('osd', 'pool', 'set', twoCopies, 'size', '2', '--yes-i-really-mean-it')
  const placementOf = () => new RbdDriveStorage({ pool: twoCopies, conf }).placement()
  t.equal(await placementOf(), 'spread', 'two copies in two racks')
  // the same two copies under the OSD rule (the dev cluster's): both may land on one host
  ceph('osd', 'pool', 'set', twoCopies, 'crush_rule', 'replicated_rule')
  t.equal(await placementOf(), 'one-host', 'two copies under an OSD failure domain')
  // a rack rule with one rack holding OSDs: one failure domain
  ceph('osd', 'crush', 'unlink', host, racks[1])
  ceph('osd', 'pool', 'set', twoCopies, 'crush_rule', rule)
  t.equal(await placementOf(), 'one-host', 'a rack rule over one rack')
  // no answer from the cluster is not a guess: the route answers 503
  const blind = new RbdDriveStorage({ pool, conf, cephCommand: '/nonexistent/ceph' })
  await t.rejects(blind.placement(), { code: 'UNAVAILABLE', message: /\/nonexistent\/ceph/ }, 'no ceph CLI: unavailable')
})

t.test('copy-on-write clone: instant whatever the size, independent of the source, flatten with progress', async t => {
  const src = randomUUID()
  const dst = randomUUID()
  await s.create(src, 10 * GiB)
  const data = randomBytes(MiB)
  const w = await s.openForWrite(src)
  await w.write(data, 5 * GiB)
  await w.close()
  await s.cloneCow(src, dst, { size: 11 * GiB })
  // structural, not timed (bench/rbd-clone.ts measures speed): the clone copied no data of its own
  const fresh = await s.stat(dst)
  t.ok(fresh.allocated < MiB, `the fresh clone allocates ${fresh.allocated} bytes (no copy of the source's MiB)`)
  t.equal((await s.stat(dst)).size, 11 * GiB, 'extended')
  t.ok((await readAll(s, dst, 5 * GiB, 5 * GiB + MiB - 1)).equals(data), 'the clone reads the source data')
  await s.cloneCow(src, dst, { size: 11 * GiB }) // a rerun is a no-op
  await rejectsCode(t, s.cloneCow(src, src), 'INVALID_ID', 'onto itself')
  const other = randomUUID()
  await s.create(other, MiB)
  await rejectsCode(t, s.cloneCow(src, other), 'EXISTS', 'onto another existing image')
  await s.delete(other)

  // writes on either side do not show on the other
  const w2 = await s.openForWrite(dst)
  await w2.write(Buffer.from('child'), 5 * GiB)
  await w2.close()
  t.ok((await readAll(s, src, 5 * GiB, 5 * GiB + 4)).equals(data.subarray(0, 5)), 'the source is unchanged')

  // the source can be deleted at once; its data lives on (hidden) for the child
  await s.delete(src)
  t.notOk(await s.exists(src), 'the source is gone for the API')
  t.ok(poolImages().some(n => n.startsWith(`deleted.${src}`)), 'kept hidden while a child needs it')
  t.ok((await readAll(s, dst, 5 * GiB + 5, 5 * GiB + 99)).equals(data.subarray(5, 100)), 'the child still reads it')

  const seen: number[] = []
  await s.flatten(dst, { onProgress: (d) => { seen.push(d) } })
  t.ok(seen.length >= 2 && seen[0] === 0 && seen[seen.length - 1] === 11 * GiB, 'progress from 0 to the size')
  t.notOk(poolImages().some(n => n.includes(src)), 'the hidden source and its snapshot went with the last child')
  t.ok((await readAll(s, dst, 5 * GiB, 5 * GiB + 4)).equals(Buffer.from('child')), 'flattened data intact')
  await s.flatten(dst) // not a clone any more: a no-op
  await s.delete(dst)
})

t.test('flatten can be cancelled and leaves a valid clone; deleting a clone releases the source snapshot', async t => {
  const src = randomUUID()
  const dst = randomUUID()
  await s.create(src, 256 * MiB)
  const data = randomBytes(256 * MiB)
  const w = await s.openForWrite(src)
  await w.write(data, 0)
  await w.close()
  await s.cloneCow(src, dst)
  const ac = new AbortController()
  const p = s.flatten(dst, { signal: ac.signal, onProgress: (d) => { if (d > 0) ac.abort() } })
  setTimeout(() => ac.abort(), 300).unref()
  const asked = Date.now()
  await rejectsCode(t, p, 'ABORTED', 'flatten aborted')
  t.ok(Date.now() - asked < 3000, 'promptly')
  const h1 = (await readAll(s, dst, 100 * MiB, 101 * MiB - 1))
  t.ok(h1.equals(data.subarray(100 * MiB, 101 * MiB)), 'the clone still reads its data')
  t.ok(poolImages().includes(`${src}@c-${dst}`), 'still a child of the source snapshot')
  await s.delete(dst)
  t.notOk(poolImages().includes(`${src}@c-${dst}`), 'deleting the child removed the snapshot')
  await s.delete(src)
})

t.test('a flatten after a cut one copies objects its object map wrongly says exist (no zeros after detaching)', async t => {
  const src = randomUUID()
  const dst = randomUUID()
  // large enough for `rbd flatten` to be cut once it reports progress (it really ran)
  await s.create(src, 10 * GiB)
  const data = randomBytes(8 * MiB)
  const w = await s.openForWrite(src)
  await w.write(data, 0)
  await w.close()
  await s.cloneCow(src, dst)
  const ac = new AbortController()
  const p = s.flatten(dst, { signal: ac.signal, onProgress: (d) => { if (d > 0) ac.abort() } })
  await rejectsCode(t, p, 'ABORTED', 'the first flatten is cut while running')
  // the state a flatten killed inside a copy-up leaves: the object map says object 0 exists
  // (librbd records it before writing), the object itself is not there
  const w2 = await s.openForWrite(dst)
  await w2.write(data.subarray(0, 1), 0) // copy-up of object 0 into the clone, recorded in the map
  await w2.close()
  const cli = (cmd: string, ...args: string[]): string => execFileSync(cmd, ['--conf', conf!, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  const before = JSON.parse(cli('rbd', 'info', '--format', 'json', `${pool}/${dst}`))
  const prefix = before.block_name_prefix as string
  t.equal(cli('rbd', 'image-meta', 'get', `${pool}/${dst}`, 'clonejobs.flattening').trim(), `${before.id};parent=${before.parent.id}@c-${dst}`, 'the cut flatten left its mark (with the snapshot to let go)')
  cli('rados', '-p', pool, 'rm', `${prefix}.0000000000000000`)
  t.ok((await readAll(s, dst, 0, 8 * MiB - 1)).equals(data), 'still a clone: object 0 reads through from the source')
  await s.flatten(dst)
  t.notOk(await s.isClone(dst), 'flattened')
  t.ok((await readAll(s, dst, 0, 8 * MiB - 1)).equals(data), 'the flattened clone holds the source data, object 0 included')
  const info = JSON.parse(cli('rbd', 'info', '--format', 'json', `${pool}/${dst}`))
  t.ok(info.features.includes('object-map') && info.features.includes('fast-diff'), 'the object map is back on')
  t.same(info.flags, [], 'and valid')
  t.notOk(cli('rbd', 'image-meta', 'list', '--format', 'json', `${pool}/${dst}`).includes('clonejobs.flattening'), 'no flatten mark is left')
  await s.delete(dst)
  await s.delete(src)
})

t.test('an unreachable cluster fails fast with UNAVAILABLE (503, retried by jobs)', async t => {
  const bad = path.join(t.testdir(), 'ceph.conf')
  writeFileSync(bad, readFileSync(conf, 'utf8').replace(/^mon_host = .*$/m, 'mon_host = v2:127.0.0.1:1'))
  const down = new RbdDriveStorage({ pool, conf: bad, connectTimeoutSeconds: 2 })
  const started = Date.now()
  try {
    await down.stat(randomUUID())
    t.fail('resolved')
  } catch (err) {
    t.ok(err instanceof StorageError && err.code === 'UNAVAILABLE', `UNAVAILABLE (${String(err)})`)
    t.equal((err as StorageError).retryable, true, 'retryable')
  }
  t.ok(Date.now() - started < 10_000, 'within the connect timeout')
  t.throws(() => new RbdDriveStorage({ pool: 'rbd/x' }), /invalid RBD pool/, 'a pool name cannot hold a path')
})

t.test('nothing leaked in the pool', async t => {
  t.ok(used.size > 20, 'the ids used were recorded')
  t.same(mine(poolImages()), mine(before), 'no image or snapshot of these tests is left')
})
