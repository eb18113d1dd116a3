// gatheringWritable: a write stream's small pieces reach the drive as few large writes, in order,
// with failures surfacing and nothing written after the end.
import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import t from 'tap'
import { gatheringWritable } from '../../src/storage/index.ts'

const KiB = 1024
const MiB = 1024 * KiB

/** A sink that keeps what it is given, and the size of each write. */
function collecting (fail?: (call: number) => boolean) {
  const got: Buffer[] = []
  const writes: number[] = []
  const events: string[] = []
  return {
    got,
    writes,
    events,
    sink: {
      writeMany: async (bufs: Buffer[], len: number) => {
        await new Promise(resolve => setImmediate(resolve))
        if (fail?.(writes.length)) throw new Error('disk full')
        writes.push(len)
        got.push(Buffer.concat(bufs))
        events.push('write')
      },
      final: async () => { events.push('final') },
      abandon: async () => { events.push('abandon') }
    }
  }
}

t.test('64 KiB pieces become 1 MiB writes, in order, the rest written before final', async t => {
  const data = randomBytes(5 * MiB + 100)
  const pieces: Buffer[] = []
  for (let off = 0; off < data.length; off += 64 * KiB) pieces.push(data.subarray(off, off + 64 * KiB))
  const c = collecting()
  await pipeline(Readable.from(pieces), gatheringWritable(c.sink))
  t.ok(Buffer.concat(c.got).equals(data), 'every byte, in order')
  t.same(c.writes, [MiB, MiB, MiB, MiB, MiB, 100], `${pieces.length} pieces in 6 writes`)
  t.equal(c.events.at(-1), 'abandon', 'destroyed after the end (auto-destroy), which abandons nothing left')
  t.equal(c.events.indexOf('final'), c.events.lastIndexOf('write') + 1, 'final after the last write')
})

t.test('a failed write fails the stream, and final is never called', async t => {
  const c = collecting(call => call === 1)
  const pieces = Array.from({ length: 64 }, () => randomBytes(64 * KiB))
  await t.rejects(pipeline(Readable.from(pieces), gatheringWritable(c.sink)), /disk full/)
  t.same(c.writes, [MiB], 'only the first write went through')
  t.notOk(c.events.includes('final'), 'nothing made durable')
  t.ok(c.events.includes('abandon'), 'the sink was let go of')
})

t.test('a stream destroyed midway drops what it held and abandons the sink', async t => {
  const c = collecting()
  const w = gatheringWritable(c.sink)
  w.write(randomBytes(100 * KiB))
  w.destroy(new Error('client went away'))
  await t.rejects(new Promise((resolve, reject) => { w.on('close', resolve); w.on('error', reject) }), /client went away/)
  t.same(c.writes, [], 'nothing written')
  t.same(c.events, ['abandon'])
})

t.test('the written hook sees each batch after its write and before the next, with the sink\'s releasesBuffers; a slow hook holds the next write back', async t => {
  const data = randomBytes(3 * MiB + 5)
  const pieces: Buffer[] = []
  for (let off = 0; off < data.length; off += 64 * KiB) pieces.push(data.subarray(off, off + 64 * KiB))
  for (const releases of [true, false, undefined]) {
    const c = collecting()
    const seen: Buffer[] = []
    const flags: boolean[] = []
    let hookRunning = false
    const sink = {
      ...c.sink,
      writeMany: async (bufs: Buffer[], len: number) => {
        if (hookRunning) throw new Error('a write began while the hook of the last one ran')
        await c.sink.writeMany(bufs, len)
      },
      releasesBuffers: releases,
      written: async (bufs: Buffer[], released: boolean) => {
        t.equal(Buffer.concat(c.got).length, Buffer.concat(seen).length + bufs.reduce((n, b) => n + b.length, 0), 'the batch was written before the hook saw it')
        hookRunning = true
        await new Promise(resolve => setTimeout(resolve, 5))
        hookRunning = false
        c.events.push('written')
        seen.push(...bufs)
        flags.push(released)
      }
    }
    await pipeline(Readable.from(pieces), gatheringWritable(sink))
    t.ok(Buffer.concat(seen).equals(data), `releasesBuffers ${releases}: the hook saw every byte, in order`)
    t.same(flags, flags.map(() => releases === true), 'and whether the sink let go of them')
    t.same(c.events.slice(0, 8), ['write', 'written', 'write', 'written', 'write', 'written', 'write', 'written'], 'each write, then its hook')
    t.equal(c.events.indexOf('final'), c.events.lastIndexOf('written') + 1, 'final after the last batch\'s hook')
  }
})
