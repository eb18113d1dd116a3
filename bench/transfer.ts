/**
 * Upload/download benchmark: `npx tsx bench/transfer.ts [sizesMiB...]` (default: 256 1024).
 *
 * For each size, a fresh service process (`node --import tsx src/server.ts`, DATA_DIR under
 * ./data/bench-transfer, a fresh database on $DATABASE_URL or the local PostgreSQL) gets:
 *   - `curl -T image` (PUT /drives/upload/, the documented raw upload), timed;
 *   - `curl -o out` (GET /drives/{uuid}/download/), timed, and compared with the image (sha256);
 *   - for reference, a plain `cp image copy` on the same disk.
 * The service's peak RSS (VmHWM from /proc/<pid>/status) is read after start-up and after the
 * transfers: it must not grow with the image size (bodies are streamed with backpressure).
 * Prints figures only: no pass/fail. Everything it made is removed at the end.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir, readFile, rm } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import pg from 'pg'
import { createPrisma } from '../src/db/client.ts'
import { addAccount } from '../src/features/accounts/service.ts'

const MiB = 1024 * 1024
const sizes = (process.argv.slice(2).length > 0 ? process.argv.slice(2) : ['256', '1024']).map(Number)
const dir = path.resolve('data', 'bench-transfer')
const adminUrl = process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres'
const EMAIL = 'bench@example.com'
const PASSWORD = 'bench-transfer-password'

function run (cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d })
    child.on('error', reject)
    child.on('close', code => code === 0 ? resolve(out) : reject(new Error(`${cmd} exited with ${code}`)))
  })
}

async function timed (fn: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint()
  await fn()
  return Number(process.hrtime.bigint() - t0) / 1e9
}

async function sha256File (file: string): Promise<string> {
  const h = createHash('sha256')
  for await (const chunk of createReadStream(file, { highWaterMark: 4 * MiB })) h.update(chunk as Buffer)
  return h.digest('hex')
}

async function writeRandom (file: string, size: number): Promise<void> {
  const out = createWriteStream(file)
  for (let left = size; left > 0; left -= 4 * MiB) {
    if (!out.write(randomBytes(Math.min(4 * MiB, left)))) await new Promise<void>(resolve => out.once('drain', () => resolve()))
  }
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => err ? reject(err) : resolve()))
}

async function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port
      srv.close(() => resolve(port))
    })
    srv.on('error', reject)
  })
}

async function memory (pid: number): Promise<{ rss: number, hwm: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') }
}

async function withDatabase<T> (name: string, fn: (url: string) => Promise<T>): Promise<T> {
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
  await admin.query(`CREATE DATABASE ${name}`)
  const url = new URL(adminUrl)
  url.pathname = `/${name}`
  try {
    return await fn(url.toString())
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {})
    await admin.end()
  }
}

async function startService (databaseUrl: string, dataDir: string, port: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    env: { ...process.env, DATABASE_URL: databaseUrl, DATA_DIR: dataDir, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn', BOOTSTRAP_ACCOUNT: 'false' },
    stdio: ['ignore', 'ignore', 'inherit']
  })
  const deadline = Date.now() + 60_000
  for (;;) {
    if (child.exitCode !== null) throw new Error('the service exited during start-up')
    try {
      const res = await fetch(`http://127.0.0.1:${port}/readyz`)
      if (res.ok) return child
    } catch {}
    if (Date.now() > deadline) throw new Error('the service did not start within 60 s')
    await new Promise(resolve => setTimeout(resolve, 200))
  }
}

interface Row { size: number, cp: number, upload: number, download: number, baseHwm: number, hwm: number, identical: boolean, sha: boolean }

async function benchSize (sizeMiB: number): Promise<Row> {
  const size = sizeMiB * MiB
  const work = path.join(dir, `${sizeMiB}m`)
  await mkdir(work, { recursive: true })
  const image = path.join(work, 'image.raw')
  const copy = path.join(work, 'copy.raw')
  const out = path.join(work, 'download.raw')
  await writeRandom(image, size)
  const imageSha = await sha256File(image) // also puts the image in the page cache for every contender
  const cp = await timed(() => run('cp', [image, copy]))
  await rm(copy, { force: true })

  return withDatabase(`clonejobs_bench_transfer_${sizeMiB}`, async (databaseUrl) => {
    const port = await freePort()
    const child = await startService(databaseUrl, path.join(work, 'service'), port)
    try {
      const prisma = createPrisma(databaseUrl, { max: 1 })
      await addAccount(prisma, EMAIL, PASSWORD)
      await prisma.$disconnect()
      const auth = `${EMAIL}:${PASSWORD}`
      const base = `http://127.0.0.1:${port}/api/2.0`
      const baseHwm = (await memory(child.pid!)).hwm
      let uuid = ''
      const upload = await timed(async () => {
        uuid = (await run('curl', ['-sS', '--fail', '-u', auth, '-T', image, '-H', 'Content-Type: application/octet-stream', `${base}/drives/upload/`])).trim()
      })
      const job = JSON.parse(await run('curl', ['-sS', '--fail', '-u', auth, `${base}/drives/${uuid}/`])).jobs[0].uuid as string
      const prisma2 = createPrisma(databaseUrl, { max: 1 })
      const result = (await prisma2.job.findUniqueOrThrow({ where: { id: job } })).result as { sha256?: string }
      await prisma2.$disconnect()
      const download = await timed(() => run('curl', ['-sS', '--fail', '-u', auth, '-o', out, `${base}/drives/${uuid}/download/`]))
      const identical = await sha256File(out) === imageSha
      const { hwm } = await memory(child.pid!)
      return { size, cp, upload, download, baseHwm, hwm, identical, sha: result.sha256 === imageSha }
    } finally {
      child.kill('SIGTERM')
      await new Promise(resolve => child.once('exit', resolve))
      await rm(work, { recursive: true, force: true })
    }
  })
}

const mbps = (size: number, s: number) => `${(size / MiB / s).toFixed(0)} MiB/s`
const mib = (n: number) => `${(n / MiB).toFixed(0)} MiB`

try {
  const rows: Row[] = []
  for (const s of sizes) rows.push(await benchSize(s))
  console.log('\nimage     | cp (reference)        | curl -T upload        | curl -o download      | service peak RSS (start → end) | bytes identical | job sha256')
  console.log('----------|-----------------------|-----------------------|-----------------------|--------------------------------|-----------------|-----------')
  for (const r of rows) {
    console.log([
      mib(r.size).padEnd(9),
      `${r.cp.toFixed(2)} s ${mbps(r.size, r.cp)}`.padEnd(21),
      `${r.upload.toFixed(2)} s ${mbps(r.size, r.upload)}`.padEnd(21),
      `${r.download.toFixed(2)} s ${mbps(r.size, r.download)}`.padEnd(21),
      `${mib(r.baseHwm)} → ${mib(r.hwm)}`.padEnd(30),
      String(r.identical).padEnd(15),
      r.sha ? 'matches' : 'DIFFERS'
    ].join(' | '))
  }
  console.log('\nPeak RSS is VmHWM of the service process; it should be about the same for every image size.')
} finally {
  await rm(dir, { recursive: true, force: true })
}
