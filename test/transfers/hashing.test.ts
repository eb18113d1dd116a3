// SHA-256 on the hash worker thread: the same digest as node:crypto in line, whatever the chunking,
// for several hashes at once; a released hash is forgotten and the worker serves the next ones; a
// fork goes on from its parent's bytes without touching it; open hashes do not keep a process alive; a chunked upload's forks reuse the same slabs.
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import t from 'tap'
import { OffThreadSha256, hashWorkerStats, slabsAllocated } from '../../src/features/transfers/hashing.ts'
import { Meter } from '../../src/features/transfers/streams.ts'

const MiB = 1024 * 1024
const inLine = (b: Buffer) => createHash('sha256').update(b).digest('hex')

t.test('the digest matches node:crypto for any chunking, empty input included', async t => {
  const data = randomBytes(5 * MiB + 12_345)
  for (const size of [1000, 64 * 1024, MiB, MiB + 1, 3 * MiB]) {
    const h = new OffThreadSha256()
    for (let off = 0; off < data.length; off += size) await h.update(data.subarray(off, off + size))
    const { hex, workerMs } = await h.digest()
    t.equal(hex, inLine(data), `chunks of ${size} bytes`)
    t.ok(workerMs >= 0, 'the worker reports its hashing time')
  }
  t.equal((await new OffThreadSha256().digest()).hex, inLine(Buffer.alloc(0)), 'nothing fed')
})

t.test('hashes fed at the same time do not mix', async t => {
  const inputs = Array.from({ length: 6 }, (_, i) => randomBytes(2 * MiB + i * 777))
  const hs = inputs.map(() => new OffThreadSha256())
  // interleaved, 64 KiB at a time, like concurrent uploads
  for (let off = 0; off < 3 * MiB; off += 64 * 1024) {
    await Promise.all(hs.map((h, i) => off < inputs[i].length ? h.update(inputs[i].subarray(off, off + 64 * 1024)) : undefined))
  }
  const digests = await Promise.all(hs.map(async h => (await h.digest()).hex))
  t.same(digests, inputs.map(inLine))
})

t.test('a Meter hashes on the worker: same digest, the time split knows the worker\'s share; a released one is forgotten', async t => {
  const data = randomBytes(40 * MiB + 3)
  const meter = new Meter(data.length, true)
  const sink = new Writable({ write (_c, _e, cb) { cb() } })
  await pipeline(Readable.from((function * () { for (let off = 0; off < data.length; off += 100_000) yield data.subarray(off, off + 100_000) })()), meter, sink)
  t.equal(await meter.digest(), inLine(data))
  t.ok(meter.workerHashMs !== undefined && meter.workerHashMs > 0, `the worker hashed for ${meter.workerHashMs} ms`)
  await t.rejects(meter.digest(), /taken or released/, 'a digest is taken once')
  const dropped = new Meter(10, true)
  dropped.write(Buffer.from('abc'))
  dropped.release()
  t.rejects(dropped.digest(), /taken or released/, 'a released hash gives no digest')
  const after = new OffThreadSha256()
  await after.update(Buffer.from('still served'))
  t.equal((await after.digest()).hex, inLine(Buffer.from('still served')), 'the worker goes on serving')
})

t.test('a fork starts from everything its parent was fed and goes on alone; the parent is untouched', async t => {
  const [a, b, c] = [randomBytes(MiB + 17), randomBytes(2 * MiB + 5), randomBytes(300)]
  const parent = new OffThreadSha256()
  await parent.update(a) // a whole slab sent, the rest still buffered: the fork must see it all
  const fork = new OffThreadSha256(parent)
  await fork.update(b)
  await parent.update(c)
  const grandchild = new OffThreadSha256(fork)
  grandchild.drop() // a failed chunk's fork: forgotten, nothing else changes
  t.equal((await fork.digest()).hex, inLine(Buffer.concat([a, b])), 'the fork: the parent\'s bytes, then its own')
  const p = await parent.digest()
  t.equal(p.hex, inLine(Buffer.concat([a, c])), 'the parent: its own bytes only')
  const parked = new OffThreadSha256()
  await parked.update(a)
  parked.park()
  await parked.update(b)
  t.equal((await parked.digest()).hex, inLine(Buffer.concat([a, b])), 'a parked hash takes bytes again')
})

t.test('open hashes (parked, forked, never digested) do not keep the process alive', async t => {
  const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures/parked-hash.ts')
  const child = spawn(process.execPath, ['--import', 'tsx', fixture], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d) => { out += String(d) })
  // bounded only so that a regression fails instead of hanging the suite
  const guard = setTimeout(() => child.kill('SIGKILL'), 60_000)
  const [code, signal] = await new Promise<[number | null, string | null]>(resolve => child.once('exit', (c, s) => resolve([c, s])))
  clearTimeout(guard)
  t.equal(out, 'ready\n', 'the fixture did its work')
  t.same([code, signal], [0, null], 'and the process ended by itself')
})

t.test('a chunked upload\'s running hash reuses its slabs from chunk to chunk', async t => {
  // four chunks of 16 MiB, each fed to a fork of the running hash, then parked (as storeChunk does)
  const chunks = Array.from({ length: 4 }, () => randomBytes(16 * MiB))
  const before = slabsAllocated()
  let running = new OffThreadSha256()
  for (const chunk of chunks) {
    const fork = new OffThreadSha256(running)
    running.drop()
    for (let off = 0; off < chunk.length; off += 64 * 1024) await fork.update(chunk.subarray(off, off + 64 * 1024))
    fork.park()
    running = fork
  }
  t.equal((await running.digest()).hex, inLine(Buffer.concat(chunks)))
  const used = slabsAllocated() - before
  t.comment(`${used} slabs of 1 MiB allocated for 64 MiB`)
  t.ok(used <= 20, `at most one hash's worth of slabs (16) and a few more, not a set per chunk: ${used}`)
})

t.test('give(): a whole buffer of 16 KiB or more moves to the worker (detached here, not copied); slices, small buffers and give(…, false) are copied; the digest is of every byte in order', async t => {
  const whole = () => { const b = Buffer.allocUnsafeSlow(64 * 1024); randomBytes(b.length).copy(b); return b }
  const backing = randomBytes(200 * 1024)
  const slice = backing.subarray(1000, 101_000) // a view into a larger buffer: other views may need the rest
  const small = Buffer.from(randomBytes(8 * 1024).buffer.slice(0)) // whole, but under 16 KiB (may be Node's pool)
  const pieces = [whole(), slice, whole(), small, whole(), whole()]
  const expected = inLine(Buffer.concat(pieces))
  const h = new OffThreadSha256()
  await h.give(pieces.slice(0, 3))
  await h.give(pieces.slice(3))
  t.equal((await h.digest()).hex, expected, 'every byte, in order, copied and moved mixed')
  t.equal(h.moved, 4 * 64 * 1024, 'the four whole 64 KiB buffers moved')
  t.same(pieces.map(p => p.length), [0, 100_000, 0, 8 * 1024, 0, 0], 'the moved buffers are detached here; the copied ones are untouched')
  t.equal(backing.length, 200 * 1024, 'the slice\'s backing buffer is untouched')

  const kept = [whole(), whole()]
  const keptDigest = inLine(Buffer.concat(kept))
  const c = new OffThreadSha256()
  await c.give(kept, false)
  t.equal((await c.digest()).hex, keptDigest)
  t.same([c.moved, kept[0].length, kept[1].length], [0, 64 * 1024, 64 * 1024], 'give(…, false) copies: the buffers stay the caller\'s')

  const over = new OffThreadSha256()
  over.drop()
  const late = whole()
  await over.give([late])
  t.equal(late.length, 64 * 1024, 'a dropped hash takes nothing more (a write stream\'s last batch after its upload failed)')
  await t.rejects(over.digest(), /digested or dropped/)
})

t.test('a Meter hashing what was written: its written hook feeds the hash, and a digest without it is refused, not wrong', async t => {
  const data = randomBytes(3 * MiB + 1)
  const wired = new Meter(data.length, true, undefined, { move: false })
  const bufs: Buffer[] = []
  const sink = new Writable({ write (c, _e, cb) { bufs.push(c); cb() } })
  await pipeline(Readable.from([data.subarray(0, MiB), data.subarray(MiB)]), wired, sink)
  const before = wired.hashMs
  await new Promise(resolve => setTimeout(resolve, 20))
  // a batch handed over after the input ended (the write stream's last, during its final flush)
  await wired.written(bufs, true)
  t.equal(wired.hashMs, before, 'time after the input ended is not the receive\'s: the split keeps the hash inside the receive')
  t.equal(await wired.digest(), inLine(data), 'the bytes the hook saw')
  t.equal(wired.movedBytes, 0, 'nothing moved without `move`, even where the storage let go of the buffers')
  t.equal(data.length, 3 * MiB + 1)
  const unwired = new Meter(data.length, true, undefined, { move: true })
  await pipeline(Readable.from([data]), unwired, new Writable({ write (_c, _e, cb) { cb() } }))
  await t.rejects(unwired.digest(), /fed 0 of 3145729 bytes/, 'the write stream\'s hook was not passed')
})

t.test('moved buffers are freed on the worker once hashed, not left for its garbage collector', async t => {
  // 192 MiB of a socket's 64 KiB reads, moved: let go of without being freed, they would set off
  // the worker's full GCs (one per 64 MiB or so of external memory) and pile up until then
  const before = await hashWorkerStats()
  const h = new OffThreadSha256()
  const expected = createHash('sha256')
  const piece = randomBytes(64 * 1024)
  for (let i = 0; i < 192 * 16; i += 16) {
    const batch = Array.from({ length: 16 }, (_, k) => { const b = Buffer.allocUnsafeSlow(64 * 1024); piece.copy(b); b.writeUInt32BE(i + k, 0); return b })
    for (const b of batch) expected.update(b)
    await h.give(batch)
  }
  t.equal((await h.digest()).hex, expected.digest('hex'))
  t.equal(h.moved, 192 * MiB, 'every buffer moved')
  const after = await hashWorkerStats()
  t.equal(after.majorGcs - before.majorGcs, 0, 'no full GC on the worker while it hashed them')
  t.ok(after.externalBytes < 32 * MiB, `the worker holds ${(after.externalBytes / MiB).toFixed(1)} MiB of buffers after the digest, not what it hashed`)
})
