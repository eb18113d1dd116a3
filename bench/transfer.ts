/**
 * Uploads and downloads beside a bare Node server, in one run:
 *   `npx tsx bench/transfer.ts [--sizes 256] [--chunk 64]`   (sizes and chunk in MiB)
 *
 * For each size, on the same disk, one random image (kept in the page cache):
 *   anchor     a bare Node HTTP server (a child process, like the service) that pipes a PUT body
 *              into a file and fsyncs it, and serves a file with a plain read stream;
 *   service    a fresh service process (`node --import tsx src/server.ts`, DATA_DIR under
 *              ./data/bench-transfer, a fresh database on DATABASE_URL, default the local
 *              PostgreSQL), with:
 *                raw        `curl -T image` to PUT /drives/upload/ (201 once stored);
 *                chunked    POST /initupload/, then per chunk ?do=upload_chunk and a POST of the
 *                           bytes to its link (one at a time, from Node), until the job succeeds;
 *                multipart  `curl -F data=... -F file=@image` to POST /_upload/, until the job
 *                           succeeds;
 *                download   `curl -o` of GET /drives/{uuid}/download/.
 * Every upload is timed from the first byte sent to the drive being usable (job success); the
 * anchor upload ends after its fsync. Downloads are compared byte for byte, and the job's sha256
 * with the image's. Each upload/download pair is compared with the bare pipe of the same size.
 * The service's peak RSS (VmHWM) is printed: it must not grow with the size (streams, not buffers).
 * Where each upload's time went (receive, hash, fsync, settle) is printed from its job's log.
 * Figures only, no pass/fail; the last line is the ratios.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import fs from 'node:fs'
import { mkdir, open, readFile, rm, stat } from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { pipeline } from 'node:stream/promises'
import { parseArgs } from 'node:util'
import pg from 'pg'

const MiB = 1024 * 1024

// ------------------------------------------------------------------ the anchor server (child)
if (process.argv[2] === '--bare-server') {
  const [root, port] = [process.argv[3], Number(process.argv[4])]
  const server = http.createServer((req, res) => {
    const file = path.join(root, path.basename(new URL(req.url ?? '/', 'http://x').pathname))
    const fail = (err: unknown) => { res.statusCode = 500; res.end(String(err)) }
    if (req.method === 'PUT') {
      void (async () => {
        await pipeline(req, createWriteStream(file, { highWaterMark: 4 * MiB }))
        // fsync applies to the file, whichever descriptor asks
        const fh = await open(file, 'r+')
        await fh.sync()
        await fh.close()
        res.statusCode = 201
        res.end()
      })().catch(fail)
    } else {
      void stat(file).then(st => {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': st.size })
        return pipeline(createReadStream(file, { highWaterMark: 4 * MiB }), res)
      }).catch(fail)
    }
  })
  server.listen(port, '127.0.0.1', () => process.send?.('ready'))
  process.on('SIGTERM', () => server.close(() => process.exit(0)))
} else {
  await main()
}

async function main (): Promise<void> {
  const { values: args } = parseArgs({ options: { sizes: { type: 'string', default: '256' }, chunk: { type: 'string', default: '64' } } })
  const sizes = args.sizes.split(',').map(Number).filter(n => n > 0)
  const chunkBytes = Math.max(1, Number(args.chunk)) * MiB
  const dir = path.resolve('data', 'bench-transfer')
  const adminUrl = process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres'
  const EMAIL = 'bench@example.com'
  const PASSWORD = 'bench-transfer-password'
  const load = () => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')

  const run = (cmd: string, argv: string[]): Promise<string> => new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d })
    child.on('error', reject)
    child.on('close', code => code === 0 ? resolve(out) : reject(new Error(`${cmd} exited with ${String(code)}`)))
  })
  const timed = async <T>(fn: () => Promise<T>): Promise<[number, T]> => {
    const t0 = performance.now()
    const v = await fn()
    return [(performance.now() - t0) / 1000, v]
  }
  const sha256File = async (file: string): Promise<string> => {
    const h = createHash('sha256')
    for await (const chunk of createReadStream(file, { highWaterMark: 4 * MiB })) h.update(chunk as Buffer)
    return h.digest('hex')
  }
  const writeRandom = async (file: string, size: number): Promise<void> => {
    const out = createWriteStream(file)
    for (let left = size; left > 0; left -= 4 * MiB) {
      if (!out.write(randomBytes(Math.min(4 * MiB, left)))) await new Promise<void>(resolve => out.once('drain', () => resolve()))
    }
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => err ? reject(err) : resolve()))
  }
  const freePort = (): Promise<number> => new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port
      srv.close(() => resolve(port))
    })
    srv.on('error', reject)
  })
  const memory = async (pid: number): Promise<number> => Number(/^VmHWM:\s+(\d+) kB/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024
  const stop = async (child: ChildProcess) => {
    if (child.exitCode !== null) return
    child.kill('SIGTERM')
    await new Promise(resolve => child.once('exit', resolve))
  }

  async function startBare (root: string): Promise<{ child: ChildProcess, base: string }> {
    const port = await freePort()
    const child = spawn(process.execPath, [...process.execArgv, process.argv[1], '--bare-server', root, String(port)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
    await new Promise<void>((resolve, reject) => { child.once('message', () => resolve()); child.once('exit', () => reject(new Error('the bare server exited'))) })
    return { child, base: `http://127.0.0.1:${port}` }
  }

  async function startService (databaseUrl: string, dataDir: string): Promise<{ child: ChildProcess, port: number }> {
    const port = await freePort()
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
      env: { ...process.env, DATABASE_URL: databaseUrl, DATA_DIR: dataDir, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn', BOOTSTRAP_ACCOUNT: 'false' },
      stdio: ['ignore', 'ignore', 'inherit']
    })
    const deadline = Date.now() + 60_000
    for (;;) {
      if (child.exitCode !== null) throw new Error('the service exited during start-up')
      try {
        if ((await fetch(`http://127.0.0.1:${port}/readyz`)).ok) return { child, port }
      } catch {}
      if (Date.now() > deadline) throw new Error('the service did not start within 60 s')
      await new Promise(resolve => setTimeout(resolve, 200))
    }
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

  /** POSTs `length` bytes of `file` from `start` to `url`; resolves with the response body. */
  const postRange = (url: string, file: string, start: number, length: number): Promise<string> => new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'content-length': length, accept: 'application/json' } }, res => {
      let body = ''
      res.setEncoding('utf8').on('data', (d: string) => { body += d })
      res.on('end', () => (res.statusCode ?? 0) < 300 ? resolve(body) : reject(new Error(`chunk: ${String(res.statusCode)} ${body}`)))
    })
    req.on('error', reject)
    createReadStream(file, { start, end: start + length - 1, highWaterMark: 4 * MiB }).on('error', reject).pipe(req)
  })

  interface Row {
    size: number
    bareUp: number
    bareDown: number
    raw: number
    chunked: number
    multipart: number
    download: number
    baseHwm: number
    hwm: number
    identical: boolean
    shas: string
    splits: Record<string, string>
  }

  async function benchSize (sizeMiB: number): Promise<Row> {
    const size = sizeMiB * MiB
    const work = path.join(dir, `${sizeMiB}m`)
    await mkdir(path.join(work, 'bare'), { recursive: true })
    const image = path.join(work, 'image.raw')
    const out = path.join(work, 'download.raw')
    await writeRandom(image, size)
    const imageSha = await sha256File(image) // also puts the image in the page cache for every contender

    // the anchor: bare pipe + fsync, bare read stream
    const bare = await startBare(path.join(work, 'bare'))
    let bareUp: number, bareDown: number
    try {
      [bareUp] = await timed(() => run('curl', ['-sS', '--fail', '-T', image, '-H', 'Content-Type: application/octet-stream', `${bare.base}/image.raw`]));
      [bareDown] = await timed(() => run('curl', ['-sS', '--fail', '-o', out, `${bare.base}/image.raw`]))
      if (await sha256File(out) !== imageSha) throw new Error('the bare server changed the bytes')
      await rm(out, { force: true })
    } finally {
      await stop(bare.child)
      await rm(path.join(work, 'bare'), { recursive: true, force: true })
    }

    return withDatabase(`clonejobs_bench_transfer_${process.pid}_${sizeMiB}`, async (databaseUrl) => {
      const { createPrisma } = await import('../src/db/client.ts')
      const { addAccount } = await import('../src/features/accounts/service.ts')
      const { child, port } = await startService(databaseUrl, path.join(work, 'service'))
      const prisma = createPrisma(databaseUrl, { max: 1 })
      try {
        await addAccount(prisma, EMAIL, PASSWORD)
        const auth = `${EMAIL}:${PASSWORD}`
        const base = `http://127.0.0.1:${port}/api/2.0`
        const headers = { authorization: 'Basic ' + Buffer.from(auth).toString('base64'), 'content-type': 'application/json' }
        const api = async (method: string, url: string, body?: unknown) => {
          const res = await fetch(base + url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
          if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${await res.text()}`)
          return await res.json() as any
        }
        const waitJob = async (id: string) => {
          for (;;) {
            const job = await api('GET', `/jobs/${id}/?wait=30`)
            if (job.state === 'success') return job
            if (job.state === 'error' || job.state === 'cancelled') throw new Error(`job ${id}: ${job.state} ${JSON.stringify(job.error)}`)
          }
        }
        const sha = async (driveId: string) => {
          const d = await api('GET', `/drives/${driveId}/`)
          return ((await prisma.job.findUniqueOrThrow({ where: { id: d.jobs.at(-1).uuid } })).result as { sha256?: string }).sha256 === imageSha
        }
        // where an upload's time went, as its job log says it (the line "time split: ...")
        const split = async (driveId: string) => {
          const d = await api('GET', `/drives/${driveId}/`)
          const res = await fetch(`${base}/jobs/${d.jobs.at(-1).uuid as string}/log/`, { headers })
          const line = (await res.text()).split('\n').find(l => l.includes('time split'))
          return line === undefined ? 'no time split in the job log' : line.replace(/^\S+ \[\d+\] /, '')
        }
        const baseHwm = await memory(child.pid!)

        let rawId = ''
        const [raw] = await timed(async () => {
          rawId = (await run('curl', ['-sS', '--fail', '-u', auth, '-T', image, '-H', 'Content-Type: application/octet-stream', `${base}/drives/upload/`])).trim()
        })

        const [chunked, chunkedId] = await timed(async () => {
          const d = (await api('POST', '/initupload/', { name: 'chunked', size, media: 'disk' })).objects[0]
          for (let n = 0; n * chunkBytes < size; n++) {
            const { link } = await api('POST', `/drives/${d.uuid}/action/?do=upload_chunk`, { chunk_number: n, chunk_size: chunkBytes })
            await postRange(`http://127.0.0.1:${port}${link as string}`, image, n * chunkBytes, Math.min(chunkBytes, size - n * chunkBytes))
          }
          await waitJob(d.jobs[0].uuid)
          return d.uuid as string
        })

        const [multipart, multipartId] = await timed(async () => {
          const data = JSON.stringify({ method: 'drives.upload', params: [{ name: 'multipart', media: 'disk' }] })
          const res = JSON.parse(await run('curl', ['-sS', '--fail', '-u', auth, '-F', `data=${data}`, '-F', `file=@${image};type=application/octet-stream`, `${base}/_upload/`])) as { job_id: string }
          const job = await waitJob(res.job_id)
          return (job.resources as string[]).map(u => u.split('/').at(-2)).find(Boolean) as string
        })

        const [download] = await timed(() => run('curl', ['-sS', '--fail', '-u', auth, '-o', out, `${base}/drives/${rawId}/download/`]))
        const identical = await sha256File(out) === imageSha
        const shas = [await sha(rawId) ? 'raw ok' : 'raw DIFFERS', await sha(chunkedId) ? 'chunked ok' : 'chunked DIFFERS', await sha(multipartId) ? 'multipart ok' : 'multipart DIFFERS'].join(', ')
        const splits = { raw: await split(rawId), chunked: await split(chunkedId), multipart: await split(multipartId) }
        return { size, bareUp, bareDown, raw, chunked, multipart, download, baseHwm, hwm: await memory(child.pid!), identical, shas, splits }
      } finally {
        await prisma.$disconnect()
        await stop(child)
        await rm(work, { recursive: true, force: true })
      }
    })
  }

  const mbps = (size: number, s: number) => `${(size / MiB / s).toFixed(0)} MiB/s`
  const cell = (size: number, s: number) => `${s.toFixed(2)} s ${mbps(size, s)}`.padEnd(19)
  const ratio = (bare: number, svc: number) => (bare / svc).toFixed(2) + 'x'
  try {
    console.log(`transfer bench: sizes ${sizes.join(', ')} MiB, chunks of ${chunkBytes / MiB} MiB; ${(fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^processor/gm) ?? []).length} cores`)
    console.log(`load average at start: ${load()}`)
    const rows: Row[] = []
    for (const s of sizes) rows.push(await benchSize(s))
    console.log('\nimage    | bare pipe+fsync up | bare stream down   | raw curl -T        | chunked            | multipart curl -F  | curl -o download   | peak RSS start→end | bytes / job sha256')
    for (const r of rows) {
      console.log([`${r.size / MiB} MiB`.padEnd(8), cell(r.size, r.bareUp), cell(r.size, r.bareDown), cell(r.size, r.raw), cell(r.size, r.chunked), cell(r.size, r.multipart), cell(r.size, r.download),
        `${(r.baseHwm / MiB).toFixed(0)} → ${(r.hwm / MiB).toFixed(0)} MiB`.padEnd(18), `${r.identical ? 'identical' : 'DIFFER'} / ${r.shas}`].join(' | '))
    }
    for (const r of rows) for (const [kind, line] of Object.entries(r.splits)) console.log(`${r.size / MiB} MiB ${kind.padEnd(9)} job log: ${line}`)
    console.log(`load average at end: ${load()}`)
    console.log('clonejobs/bare: ' + rows.map(r => `${rows.length > 1 ? `${r.size / MiB} MiB: ` : ''}raw upload ${ratio(r.bareUp, r.raw)}, chunked upload ${ratio(r.bareUp, r.chunked)}, multipart upload ${ratio(r.bareUp, r.multipart)}, download ${ratio(r.bareDown, r.download)}`).join('; '))
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}
