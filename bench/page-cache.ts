/**
 * What writing into fresh memory costs on this machine: `npx tsx bench/page-cache.ts [--files 9] [--mib 256]`
 *
 * These machines are VMs that hand freed memory back to the host (free page reporting); touching
 * such memory again costs a host fault per page. This writes `files` files of `mib` MiB one after
 * another (64 KiB writes, one fsync at the end, as the bare pipe of bench:transfer does), keeping
 * them, so later files need page cache the earlier ones did not free; then touches 1 GiB of fresh
 * anonymous memory. It prints each file's wall time and the process's user and system CPU: a file
 * whose page cache lands on reported memory shows as several times the system time of the first
 * ones. Why bench:transfer removes every file right after its run. Figures only, no pass/fail.
 */
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import { mkdir, open, rm } from 'node:fs/promises'
import path from 'node:path'
import { parseArgs } from 'node:util'

const MiB = 1024 * 1024
const { values: args } = parseArgs({ options: { files: { type: 'string', default: '9' }, mib: { type: 'string', default: '256' } } })
const files = Math.max(1, Number(args.files) || 9)
const size = Math.max(1, Number(args.mib) || 256) * MiB
const dir = path.resolve('data', 'bench-page-cache')
const load = () => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')
const ms = (us: number) => `${(us / 1000).toFixed(0)} ms`

console.log(`page cache bench: ${files} files of ${size / MiB} MiB, kept until the end; kernel command line ${/page_reporting\S*/.exec(fs.readFileSync('/proc/cmdline', 'utf8'))?.[0] ?? 'without page_reporting options'}`)
console.log(`load average at start: ${load()}`)
await mkdir(dir, { recursive: true })
try {
  const piece = randomBytes(64 * 1024)
  for (let i = 0; i < files; i++) {
    const h = await open(path.join(dir, `f${i}.raw`), 'w')
    const [c0, t0] = [process.resourceUsage(), performance.now()]
    for (let pos = 0; pos < size; pos += piece.length) await h.write(piece, 0, piece.length, pos)
    await h.sync()
    await h.close()
    const c = process.resourceUsage()
    console.log(`file ${i}: ${(performance.now() - t0).toFixed(0)} ms, user ${ms(c.userCPUTime - c0.userCPUTime)}, system ${ms(c.systemCPUTime - c0.systemCPUTime)}`)
  }
  const [c0, t0] = [process.resourceUsage(), performance.now()]
  Buffer.allocUnsafeSlow(1024 * MiB).fill(1)
  const c = process.resourceUsage()
  console.log(`1 GiB of fresh anonymous memory touched: ${(performance.now() - t0).toFixed(0)} ms, system ${ms(c.systemCPUTime - c0.systemCPUTime)}`)
} finally {
  await rm(dir, { recursive: true, force: true })
}
console.log(`load average at end: ${load()}`)
