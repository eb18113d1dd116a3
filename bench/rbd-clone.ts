/**
 * rbd against local, side by side in one run: `CEPH_CONF=... npx tsx bench/rbd-clone.ts`
 * (storage layer only, no database). Start a dev cluster with ../shared/tools/ceph-dev.sh.
 *
 *   clone latency: a drive of 1, 10 and 100 GiB holding 64 MiB of random data; local makes a
 *                  full sparse copy (storage.copy, fsync off), rbd a copy-on-write clone.
 *   flatten:       MiB/s of `rbd flatten` of that clone (the local copy above is the anchor).
 *   upload/download: 256 MiB written through createWriteStream and read back through
 *                  createReadStream, MiB/s.
 * Prints the load average beside the figures. Figures only, no asserts.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { LocalDriveStorage, RbdDriveStorage, type DriveStorage } from '../src/storage/index.ts'

const MiB = 1024 ** 2
const GiB = 1024 ** 3
const conf = process.env.CEPH_CONF
if (!conf) throw new Error('set CEPH_CONF to a Ceph cluster (../shared/tools/ceph-dev.sh start DIR prints it)')
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-rbd-'))
const local = new LocalDriveStorage({ root, durable: false })
const rbd = new RbdDriveStorage({ pool: process.env.RBD_POOL || 'rbd', conf })
const load = (): string => os.loadavg().map(l => l.toFixed(2)).join(' ')

async function fill (s: DriveStorage, id: string, bytes: number, at = 0): Promise<void> {
  async function * chunks (): AsyncGenerator<Buffer> { for (let left = bytes; left > 0; left -= 4 * MiB) yield randomBytes(Math.min(left, 4 * MiB)) }
  await pipeline(Readable.from(chunks()), await s.createWriteStream(id, { start: at }))
}

async function timed (fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint()
  await fn()
  return Number(process.hrtime.bigint() - t) / 1e6
}

const rows: string[][] = [['figure', 'local', 'rbd']]
const made: Array<[DriveStorage, string]> = []
const id = (s: DriveStorage): string => { const x = randomUUID(); made.push([s, x]); return x }
try {
  console.log(`load average before: ${load()}`)
  for (const size of [1 * GiB, 10 * GiB, 100 * GiB]) {
    const ms: number[] = []
    let flattenMiBs = 0
    for (const s of [local, rbd] as DriveStorage[]) {
      const src = id(s)
      await s.create(src, size)
      for (let i = 0; i < 8; i++) await fill(s, src, 8 * MiB, Math.floor(size / 8) * i)
      const dst = id(s)
      if (s === rbd) {
        ms.push(await timed(() => rbd.cloneCow(src, dst)))
        const fms = await timed(() => rbd.flatten(dst))
        flattenMiBs = (size / MiB) / (fms / 1000)
      } else {
        ms.push(await timed(() => s.copy(src, dst)))
      }
    }
    rows.push([`clone ${size / GiB} GiB (64 MiB data), ms`, ms[0].toFixed(0), ms[1].toFixed(0)])
    rows.push([`  then flatten ${size / GiB} GiB, MiB/s of nominal size`, '-', flattenMiBs.toFixed(0)])
  }
  const up: string[] = []
  const down: string[] = []
  for (const s of [local, rbd] as DriveStorage[]) {
    const d = id(s)
    await s.create(d, 256 * MiB)
    up.push((256 / (await timed(() => fill(s, d, 256 * MiB)) / 1000)).toFixed(0))
    const sink = new Writable({ write (_c, _e, cb) { cb() } })
    down.push((256 / (await timed(async () => pipeline(await s.createReadStream(d), sink)) / 1000)).toFixed(0))
  }
  rows.push(['upload 256 MiB (write stream), MiB/s', ...up])
  rows.push(['download 256 MiB (read stream), MiB/s', ...down])
  const w = rows[0].map((_, c) => Math.max(...rows.map(r => r[c].length)))
  for (const r of rows) console.log(r.map((v, c) => c === 0 ? v.padEnd(w[c]) : v.padStart(w[c])).join('  '))
  console.log(`load average after: ${load()}`)
} finally {
  for (const [s, x] of made.reverse()) await s.delete(x).catch(() => {})
  fs.rmSync(root, { recursive: true, force: true })
}
