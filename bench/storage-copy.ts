/**
 * Copy benchmark for drive images: `npx tsx bench/storage-copy.ts [rounds]`.
 *
 * Cases, built under ./data/bench-tmp (same disk as ./data, removed afterwards):
 *   sparse: a 10 GiB image holding 64 MiB of random data in 8 regions
 *   dense:  a 2 GiB image of random data
 * Methods: `cp --sparse=always` (the reference), `cp --sparse=auto`, `dd bs=4M` (dense; `conv=sparse` variant on the sparse
 * case), and LocalDriveStorage.copy through cp and through the Node fallback, without and
 * with fsync (`durable`). One untimed warm-up round fills the page cache, then `rounds`
 * timed rounds (default 3) in which the methods take turns; `sync` runs between runs so
 * writeback of one run does not slow the next. Prints the median (and best) time, throughput and the ratio to cp.
 * Prints figures only: no pass/fail.
 */
import { spawn } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import { mkdir, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { LocalDriveStorage } from '../src/storage/local.ts'
import { median } from './stats.ts'

const MiB = 1024 * 1024
const GiB = 1024 * MiB
const rounds = Math.max(1, Number(process.argv[2] ?? 3))
const dir = path.resolve('data', 'bench-tmp')
const root = path.join(dir, 'drives')

function run (cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] })
    child.on('error', reject)
    child.on('close', code => { code === 0 ? resolve() : reject(new Error(`${cmd} exited with ${String(code)}`)) })
  })
}

async function writeRandom (s: LocalDriveStorage, id: string, start: number, len: number): Promise<void> {
  async function * gen (): AsyncGenerator<Buffer> {
    for (let left = len; left > 0; left -= 4 * MiB) yield randomBytes(Math.min(left, 4 * MiB))
  }
  await pipeline(Readable.from(gen()), await s.createWriteStream(id, { start }))
}

interface Method {
  name: string
  only?: 'sparse' | 'dense'
  copy: (src: string, dst: string) => Promise<void>
}

const fast = new LocalDriveStorage({ root, durable: false, copyMethod: 'cp' })
const fastAuto = new LocalDriveStorage({ root, durable: false, copyMethod: 'cp', cpSparse: 'auto' })
const fastDurable = new LocalDriveStorage({ root, durable: true, copyMethod: 'cp' })
const node = new LocalDriveStorage({ root, durable: false, copyMethod: 'node' })
const nodeDurable = new LocalDriveStorage({ root, durable: true, copyMethod: 'node' })

const methods: Method[] = [
  { name: 'cp --sparse=always', copy: (src, dst) => run('cp', ['--sparse=always', fast.path(src), fast.path(dst)]) },
  { name: 'cp --sparse=auto', copy: (src, dst) => run('cp', ['--sparse=auto', fast.path(src), fast.path(dst)]) },
  { name: 'dd bs=4M', only: 'dense', copy: (src, dst) => run('dd', [`if=${fast.path(src)}`, `of=${fast.path(dst)}`, 'bs=4M', 'status=none']) },
  { name: 'dd bs=4M conv=sparse', only: 'sparse', copy: (src, dst) => run('dd', [`if=${fast.path(src)}`, `of=${fast.path(dst)}`, 'bs=4M', 'conv=sparse', 'status=none']) },
  { name: 'storage.copy (cp)', copy: (src, dst) => fast.copy(src, dst) },
  { name: 'storage.copy (cp auto)', copy: (src, dst) => fastAuto.copy(src, dst) },
  { name: 'storage.copy (cp, fsync)', copy: (src, dst) => fastDurable.copy(src, dst) },
  { name: 'storage.copy (node)', copy: (src, dst) => node.copy(src, dst) },
  { name: 'storage.copy (node, fsync)', copy: (src, dst) => nodeDurable.copy(src, dst) },
]

async function main (): Promise<void> {
  await rm(dir, { recursive: true, force: true })
  const setup = new LocalDriveStorage({ root, durable: false })
  const cases = [
    { name: 'sparse', id: randomUUID(), size: 10 * GiB },
    { name: 'dense', id: randomUUID(), size: 2 * GiB },
  ] as const
  console.log(`building sources in ${dir} ...`)
  await setup.create(cases[0].id, cases[0].size)
  for (let i = 0; i < 8; i++) await writeRandom(setup, cases[0].id, i * 1280 * MiB + 12 * MiB, 8 * MiB)
  await setup.create(cases[1].id, cases[1].size)
  await writeRandom(setup, cases[1].id, 0, cases[1].size)
  await run('sync', [])

  const rows: string[][] = []
  for (const c of cases) {
    const st = await setup.stat(c.id)
    console.log(`${c.name}: ${(st.size / GiB).toFixed(1)} GiB nominal, ${(st.allocated / MiB).toFixed(1)} MiB allocated`)
    const ms = methods.filter(m => m.only === undefined || m.only === c.name)
    const times = new Map<Method, number[]>(ms.map(m => [m, []]))
    const dstAlloc = new Map<Method, number>()
    // Methods take turns within each round, so a change of load on the machine affects all
    // of them alike. Round 0 warms the page cache and is not counted.
    for (let r = 0; r <= rounds; r++) {
      for (const m of ms) {
        const dst = randomUUID()
        await mkdir(path.dirname(setup.path(dst)), { recursive: true }) // for cp/dd run directly
        const t0 = process.hrtime.bigint()
        await m.copy(c.id, dst)
        const elapsed = Number(process.hrtime.bigint() - t0) / 1e6
        if (r > 0) times.get(m)?.push(elapsed)
        const dstStat = await setup.stat(dst)
        if (dstStat.size !== st.size) throw new Error(`${m.name}: copy has size ${dstStat.size}, expected ${st.size}`)
        dstAlloc.set(m, dstStat.allocated)
        await setup.delete(dst)
        await run('sync', [])
      }
      if (r > 0) console.log(`  round ${r}/${rounds} done`)
    }
    const cpMedian = median(times.get(ms[0]) ?? [])
    for (const m of ms) {
      const ts = times.get(m) ?? []
      const med = median(ts)
      rows.push([
        c.name,
        m.name,
        med.toFixed(1),
        Math.min(...ts).toFixed(1),
        (st.size / 1e6 / (med / 1e3)).toFixed(0),
        (st.allocated / 1e6 / (med / 1e3)).toFixed(0),
        (med / cpMedian).toFixed(2),
        ((dstAlloc.get(m) ?? 0) / MiB).toFixed(1),
      ])
    }
  }

  const header = ['case', 'method', 'median ms', 'best ms', 'MB/s nominal', 'MB/s data', 'x cp', 'dst MiB alloc']
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map(r => r[i].length)))
  const line = (r: string[]): string => r.map((v, i) => (i < 2 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join('  ')
  console.log()
  console.log(line(header))
  console.log(widths.map(w => '-'.repeat(w)).join('  '))
  for (const r of rows) console.log(line(r))
  console.log(`\nMB = 10^6 bytes. "MB/s data" counts the source's allocated bytes. node ${process.version}, ${rounds} timed rounds + 1 warm-up round, methods interleaved; load average at the end ${os.loadavg()[0].toFixed(1)} on ${os.cpus().length} CPUs.`)
}

const cleanup = (): Promise<void> => rm(dir, { recursive: true, force: true })
process.once('SIGINT', () => { cleanup().finally(() => process.exit(130)) })
try {
  await main()
} finally {
  await cleanup()
}
