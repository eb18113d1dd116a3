/**
 * Uploads and downloads beside a bare Node server, in one run:
 *   `npx tsx bench/transfer.ts [--sizes 256] [--chunk 64] [--parallel 1] [--rounds 1] [--warmup 1] [--load 0] [--chunk-client curl|node] [--chunk-protocol links|resumable]`   (sizes and chunk in MiB)
 *
 * `--warmup N` rounds run first and are not counted: a fresh service compiles its upload paths
 * during its first uploads (its first raw upload used about twice the CPU of the later ones).
 *
 * `--load N` runs N CPU-burning child processes for the whole run (anchor and service alike), so a
 * loaded figure can be made again; the header says so. `--rounds N` measures each contender N
 * times. In a round every upload runs between two runs of the anchor upload (anchor, raw, anchor,
 * bare chunks, chunked, bare chunks, anchor, multipart, anchor; the uploads' order flips every
 * other round), and the download between two anchor downloads; each ratio compares the contender
 * with the mean of the anchor runs on either side of it, made seconds apart, so a drift of the
 * machine's speed falls on both sides. Every file a run writes (the anchor's, the service's drive)
 * is removed right after it, so each run finds the same free memory for its page cache (see
 * settle() below: on these virtual machines that alone moves a run up to 3x). The download reads
 * the round's last upload. The table shows median times, the last line the median of each round's
 * ratios, so a passing spike on a shared machine moves one sample, not the figure.
 *
 * For each size, on the same disk, one random image (kept in the page cache):
 *   anchor     a bare Node HTTP server (a child process, like the service) that pipes a PUT body
 *              into a file and fsyncs it, and serves a file with a plain read stream; and the
 *              same server taking the chunks (PUT ?start=offset, written there and fsynced, sent
 *              as the chunked upload's client sends them): what chunking itself costs, with no
 *              link requests and no database;
 *   service    a fresh service process (`node --import tsx src/server.ts`, DATA_DIR under
 *              ./data/bench-transfer, a fresh database on DATABASE_URL, default the local
 *              PostgreSQL), with:
 *                raw        `curl -T image` to PUT /drives/upload/ (201 once stored);
 *                chunked    POST /initupload/, then per chunk ?do=upload_chunk and the bytes sent to
 *                           its link, one at a time (`--parallel N`: N at a time, in order of their
 *                           numbers, as resumable.js sends its simultaneousUploads, 3 by default;
 *                           the client split then sums overlapping times), until the job succeeds:
 *                           `curl -T` of the chunk's file (the image split beforehand), or with
 *                           `--chunk-client node` a POST of the image's range from this process;
 *                           `--chunk-protocol resumable`: no links, each chunk POSTed to
 *                           /drives/{uuid}/upload/ with Basic auth and the resumable* fields in
 *                           the query string, as resumable.js sends it with method "octet";
 *                           `--test-chunks` (with it): a GET of each chunk before its POST, as
 *                           resumable.js asks by default (testChunks), answered 404; the bare
 *                           server answers the same GET from the chunks it holds in memory;
 *                multipart  `curl -F data=... -F file=@image` to POST /_upload/, until the job
 *                           succeeds;
 *                download   `curl -o` of GET /drives/{uuid}/download/.
 * Every upload is timed from the first byte sent to the drive being usable (job success); the
 * anchor upload ends after its fsync. The chunked upload's client side is split too (initupload,
 * the link requests, the chunk POSTs, the wait for the job after the last chunk's answer): the
 * protocol's extra requests are the link requests and the initupload. Downloads are compared byte for byte, and the job's sha256
 * with the image's. Each upload/download pair is compared with the bare pipe of the same size.
 * The service's peak RSS (VmHWM) is printed: it must not grow with the size (streams, not buffers).
 * Where each upload's time went (receive, hash, fsync, settle) is printed from its job's log.
 * Figures only, no pass/fail; the last line is the ratios. With BENCH_PROF=DIR in the environment
 * the service processes write CPU profiles there (node --cpu-prof), read when they stop.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import fs from 'node:fs'
import { link, mkdir, open, readFile, rm, stat } from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { pipeline } from 'node:stream/promises'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { spawnTied } from './children.ts'
import { describeLoad, startBurners } from './load.ts'
import { median } from './stats.ts'

const MiB = 1024 * 1024

// ------------------------------------------------------------------ the anchor server (child)
if (process.argv[2] === '--bare-server') {
  const [root, port] = [process.argv[3], Number(process.argv[4])]
  const storedChunks = new Set<string>()
  const server = http.createServer((req, res) => {
    const file = path.join(root, path.basename(new URL(req.url ?? '/', 'http://x').pathname))
    const fail = (err: unknown) => { res.statusCode = 500; res.end(String(err)) }
    const query = new URL(req.url ?? '/', 'http://x').searchParams
    // ?start=N&run=R: chunk N of run R, as the chunks it has stored (resumable.js's test GET)
    const chunkKey = `${query.get('run') ?? ''}:${query.get('start') ?? ''}`
    if (req.method === 'GET' && query.get('start') !== null) {
      res.statusCode = storedChunks.has(chunkKey) ? 200 : 404
      res.end()
    } else if (req.method === 'PUT' || req.method === 'POST') {
      // ?start=N: one chunk written at its offset into the file (made if missing), then fsynced
      const start = query.get('start')
      void (async () => {
        const out = await open(file, start !== null ? fs.constants.O_RDWR | fs.constants.O_CREAT : 'w')
        await pipeline(req, createWriteStream('', { fd: out, highWaterMark: 4 * MiB, start: Number(start ?? 0) }))
        // fsync applies to the file, whichever descriptor asks
        const fh = await open(file, 'r+')
        await fh.sync()
        await fh.close()
        if (start !== null) storedChunks.add(chunkKey)
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
  const { values: args } = parseArgs({
    options: {
      sizes: { type: 'string', default: '256' },
      chunk: { type: 'string', default: '64' },
      rounds: { type: 'string', default: '1' },
      load: { type: 'string', default: '0' },
      warmup: { type: 'string', default: '1' },
      'chunk-client': { type: 'string', default: 'curl' },
      'chunk-protocol': { type: 'string', default: 'links' },
      parallel: { type: 'string', default: '1' },
      'test-chunks': { type: 'boolean', default: false }
    }
  })
  const chunkClient = args['chunk-client'] === 'node' ? 'node' : 'curl'
  // links: §5.2 (a link request per chunk, the chunk to its link); resumable: §5.3 as resumable.js
  // sends it with method "octet" (each chunk POSTed to /drives/{uuid}/upload/ with Basic auth and
  // the resumable* fields in the query string: no link requests)
  const chunkProtocol = args['chunk-protocol'] === 'resumable' ? 'resumable' : 'links'
  // resumable.js's testChunks: a GET of each chunk before its POST (404: not stored yet)
  const testChunks = chunkProtocol === 'resumable' && args['test-chunks'] === true
  const sizes = args.sizes.split(',').map(Number).filter(n => n > 0)
  const chunkBytes = Math.max(1, Number(args.chunk)) * MiB
  const rounds = Math.max(1, Math.floor(Number(args.rounds)) || 1)
  const burners = Math.max(0, Math.floor(Number(args.load)) || 0)
  const warmups = Math.max(0, Math.floor(Number(args.warmup)) || 0)
  // chunks in flight at once, for the bare chunks and the service alike (resumable.js's
  // simultaneousUploads defaults to 3)
  const parallel = Math.max(1, Math.floor(Number(args.parallel)) || 1)
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
  // CPU time (user + system, all threads) a process has used, in seconds (clock ticks of 10 ms)
  const procStat = async (pid: number): Promise<{ cpu: number, sys: number, faults: number }> => {
    const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).replace(/^.*\) /s, '').split(' ')
    // minflt, utime, stime (proc(5): fields 10, 14 and 15)
    return { cpu: (Number(fields[11]) + Number(fields[12])) / 100, sys: Number(fields[12]) / 100, faults: Number(fields[7]) }
  }
  const memory = async (pid: number): Promise<number> => Number(/^VmHWM:\s+(\d+) kB/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024
  const stop = async (child: ChildProcess) => {
    if (child.exitCode !== null) return
    child.kill('SIGTERM')
    await new Promise(resolve => child.once('exit', resolve))
  }

  async function startBare (root: string): Promise<{ child: ChildProcess, base: string }> {
    const port = await freePort()
    const child = spawnTied(process.execPath, [...process.execArgv, process.argv[1], '--bare-server', root, String(port)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
    await new Promise<void>((resolve, reject) => { child.once('message', () => resolve()); child.once('exit', () => reject(new Error('the bare server exited'))) })
    return { child, base: `http://127.0.0.1:${port}` }
  }

  async function startService (databaseUrl: string, dataDir: string): Promise<{ child: ChildProcess, port: number }> {
    const port = await freePort()
    const child = spawnTied(process.execPath, [...(process.env.BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir=' + process.env.BENCH_PROF] : []), '--import', 'tsx', 'src/server.ts'], {
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
  const postRange = (url: string, file: string, start: number, length: number, headers: Record<string, string> = {}): Promise<string> => new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'content-length': length, accept: 'application/json', ...headers } }, res => {
      let body = ''
      res.setEncoding('utf8').on('data', (d: string) => { body += d })
      res.on('end', () => (res.statusCode ?? 0) < 300 ? resolve(body) : reject(new Error(`chunk: ${String(res.statusCode)} ${body}`)))
    })
    req.on('error', reject)
    createReadStream(file, { start, end: start + length - 1, highWaterMark: 4 * MiB }).on('error', reject).pipe(req)
  })

  interface Sample {
    bareUp: number
    bareChunks: number
    bareDown: number
    raw: number
    chunked: number
    multipart: number
    download: number
  }
  type Contender = keyof Sample
  /** One round: each contender's time, and for each upload the mean of the anchor runs on either side of it. */
  interface Round extends Sample {
    around: Record<'raw' | 'chunked' | 'multipart', number>
  }

  interface Row extends Sample {
    size: number
    samples: Round[]
    baseHwm: number
    hwm: number
    identical: boolean
    shas: string
    splits: Record<string, string>
    /** the chunked upload's client side, median of each part (ms) */
    chunkedClient: string
    /** CPU seconds the server process used for each contender (medians) */
    serverCpuLine: string
    /** of which system time, and the minor page faults it took (medians) */
    serverSysLine: string
  }

  async function benchSize (sizeMiB: number): Promise<Row> {
    const size = sizeMiB * MiB
    const work = path.join(dir, `${sizeMiB}m`)
    await mkdir(path.join(work, 'bare'), { recursive: true })
    const image = path.join(work, 'image.raw')
    const out = path.join(work, 'download.raw')
    await writeRandom(image, size)
    const imageSha = await sha256File(image) // also puts the image in the page cache for every contender
    // the protocol's geometry (§5.2): floor(size / S) chunks, the last one holding the rest
    const chunkCount = Math.max(1, Math.floor(size / chunkBytes))
    const chunkEnd = (n: number) => n === chunkCount - 1 ? size : (n + 1) * chunkBytes
    const chunkFile = (n: number) => path.join(work, `chunk-${n}.raw`)
    if (chunkClient === 'curl') {
      for (let n = 0; n < chunkCount; n++) await pipeline(createReadStream(image, { start: n * chunkBytes, end: chunkEnd(n) - 1 }), createWriteStream(chunkFile(n)))
    }
    // on disk before any measurement: the kernel writing these back must not overlap a contender
    for (const file of [image, ...(chunkClient === 'curl' ? Array.from({ length: chunkCount }, (_, n) => chunkFile(n)) : [])]) {
      const fh = await open(file, 'r+')
      await fh.sync()
      await fh.close()
    }
    /** Runs `send` for every chunk number, `parallel` at a time, in order of their numbers. */
    const eachChunk = async (send: (n: number) => Promise<void>): Promise<void> => {
      let next = 0
      await Promise.all(Array.from({ length: Math.min(parallel, chunkCount) }, async () => {
        while (next < chunkCount) await send(next++)
      }))
    }
    /**
     * Sends chunk n to `url` with the chunked client (PUT with curl, POST from this process; a
     * POST with `auth`, Basic, for resumable.js's protocol).
     */
    /** resumable.js's test of a chunk before it sends it: a GET, which must answer 404 (not stored yet). */
    const testChunk = async (url: string, auth?: string): Promise<void> => {
      const res = await fetch(url, { headers: auth === undefined ? {} : { authorization: 'Basic ' + Buffer.from(auth).toString('base64') } })
      await res.arrayBuffer()
      if (res.status !== 404) throw new Error(`GET ${url}: ${res.status}, expected 404 (the chunk is not sent yet)`)
    }
    const sendChunk = async (url: string, n: number, auth?: string): Promise<void> => {
      // --request-target: curl -T would append the file's name to a URL ending in '/'
      const u = new URL(url)
      if (chunkClient === 'curl') {
        await run('curl', ['-sS', '--fail', '-T', chunkFile(n), '-H', 'Content-Type: application/octet-stream', ...(auth === undefined ? [] : ['-X', 'POST', '-u', auth]), '--request-target', u.pathname + u.search, u.origin + '/'])
      } else {
        await postRange(url, image, n * chunkBytes, chunkEnd(n) - n * chunkBytes, auth === undefined ? {} : { authorization: 'Basic ' + Buffer.from(auth).toString('base64') })
      }
    }

    return withDatabase(`clonejobs_bench_transfer_${process.pid}_${sizeMiB}`, async (databaseUrl) => {
      const { createDatabase } = await import('../src/db/client.ts')
      const { addAccount } = await import('../src/features/accounts/service.ts')
      // the anchor: bare pipe + fsync, bare read stream; beside the service for the whole run
      const bare = await startBare(path.join(work, 'bare'))
      const { child, port } = await startService(databaseUrl, path.join(work, 'service'))
      const { prisma, close } = createDatabase(databaseUrl, { max: 1 })
      try {
        await addAccount(prisma, EMAIL, PASSWORD)
        const auth = `${EMAIL}:${PASSWORD}`
        const base = `http://127.0.0.1:${port}/api/2.0`
        const headers = { authorization: 'Basic ' + Buffer.from(auth).toString('base64'), 'content-type': 'application/json' }
        const api = async (method: string, url: string, body?: unknown) => {
          const res = await fetch(base + url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
          if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${await res.text()}`)
          return res.status === 204 ? undefined : await res.json() as any
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

        // major (mark-compact) GCs the service ran, from its /metrics
        const majorGcs = async (): Promise<number> => {
          const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
          return Number(/^nodejs_gc_duration_seconds_count\{kind="major"\} (\d+)/m.exec(text)?.[1] ?? 0) // none yet: no line
        }
        const samples: Round[] = []
        const cpus: Sample[] = []
        const gcs: Array<Partial<Sample>> = []
        const client: Array<Record<string, number>> = []
        // the server's CPU seconds over `fn` (the bare server for the anchor, the service otherwise)
        let used: Partial<Sample> = {}
        let usedRuns: Partial<Record<Contender, Array<{ cpu: number, sys: number, faults: number }>>> = {}
        // system CPU seconds and minor page faults (each fresh page the process touches costs one,
        // and a host fault when the kernel had handed that memory back; see page-cache.ts)
        const sysFaults: Array<Partial<Record<Contender, { sys: number, faults: number }>>> = []
        let sf: Partial<Record<Contender, { sys: number, faults: number }>> = {}
        let gc: Partial<Sample> = {}
        const serverCpu = async <T>(k: Contender, pid: number, fn: () => Promise<T>): Promise<T> => {
          const service = pid === child.pid
          const [before, gcBefore] = [await procStat(pid), service ? await majorGcs() : 0]
          const v = await fn()
          // an anchor runs several times a round: the mean of its runs
          const runs = (usedRuns[k] ??= [])
          const after = await procStat(pid)
          runs.push({ cpu: after.cpu - before.cpu, sys: after.sys - before.sys, faults: after.faults - before.faults })
          const meanOf = (f: 'cpu' | 'sys' | 'faults') => runs.reduce((a, b) => a + b[f], 0) / runs.length
          used[k] = meanOf('cpu')
          sf[k] = { sys: meanOf('sys'), faults: meanOf('faults') }
          if (service) gc[k] = await majorGcs() - gcBefore
          return v
        }
        let identical = true
        const shaOk: Record<'raw' | 'chunked' | 'multipart', boolean> = { raw: true, chunked: true, multipart: true }
        const splits: Record<string, string> = {}
        const driveFile = (id: string) => path.join(work, 'service', 'drives', id.slice(0, 2), `${id}.img`)
        /**
         * Checks an uploaded drive (its job's sha256, its time split), then deletes it and waits
         * until its image is gone. Every written file is removed right after its run, the anchor's
         * too: on these virtual machines, memory the kernel frees is handed back to the host after a
         * few seconds (free page reporting) and costs a host fault per page when touched again, so a
         * writer that gets freshly freed pages for its page cache runs up to 3x faster than one that
         * gets reported ones (measured: 256 MiB written and fsynced in 0.3 s or in 0.8-1 s, most of
         * it system time). Removing each file at once gives every run the same supply.
         */
        const settle = async (kind: 'raw' | 'chunked' | 'multipart', id: string): Promise<void> => {
          shaOk[kind] &&= await sha(id)
          splits[kind] = await split(id)
          await api('DELETE', `/drives/${id}/`)
          for (const deadline = Date.now() + 60_000; fs.existsSync(driveFile(id));) {
            if (Date.now() > deadline) throw new Error(`drive ${id}'s image was not removed within 60 s`)
            await new Promise(resolve => setTimeout(resolve, 20))
          }
        }
        // one anchor run of each kind; every run writes a new file, removed after it
        const anchorUp = () => serverCpu('bareUp', bare.child.pid!, () => timed(async () => {
          await run('curl', ['-sS', '--fail', '-T', image, '-H', 'Content-Type: application/octet-stream', `${bare.base}/image.raw`])
        })).then(async ([s]) => { await rm(path.join(work, 'bare', 'image.raw'), { force: true }); return s })
        // each bare chunk request's own time, in the counted rounds (with N at a time they overlap: the wall-clock laps below do not say it)
        const bareChunkOwn: number[] = []
        let bareRun = 0
        const anchorChunks = () => serverCpu('bareChunks', bare.child.pid!, () => timed(async () => {
          const run = ++bareRun
          await eachChunk(async n => {
            const t0 = performance.now()
            const url = `${bare.base}/chunks.raw?start=${n * chunkBytes}&run=${run}`
            if (testChunks) await testChunk(url)
            await sendChunk(url, n)
            bareChunkOwn.push(performance.now() - t0)
          })
        })).then(async ([s]) => { await rm(path.join(work, 'bare', 'chunks.raw'), { force: true }); return s })
        // the bare server serves the image itself (a hard link into its directory, in the page cache)
        await link(image, path.join(work, 'bare', 'serve.raw'))
        const anchorDown = async (): Promise<number> => {
          const [s] = await serverCpu('bareDown', bare.child.pid!, () => timed(() => run('curl', ['-sS', '--fail', '-o', out, `${bare.base}/serve.raw`])))
          if (await sha256File(out) !== imageSha) throw new Error('the bare server changed the bytes')
          await rm(out, { force: true })
          return s
        }
        const mean = (a: number, b: number) => (a + b) / 2
        for (let round = -warmups; round < rounds; round++) {
          used = {}
          usedRuns = {}
          sf = {}
          gc = {}
          // Each service contender runs between two anchor runs of its kind, and its ratio is taken
          // against their mean: a drift of the machine's speed over the round then falls on both
          // sides. The uploads' order flips every other round, so no contender always follows the
          // same one. The download reads the round's last upload before that drive is deleted.
          const [up, chunks, down]: [number[], number[], number[]] = [[], [], []]
          const at: Partial<Record<'raw' | 'chunked' | 'multipart', number>> = {}
          let raw = 0
          let chunked = 0
          let multipart = 0
          let download = 0
          /** the download's pair of anchors and itself, from the drive `id` (then deleted by its upload's settle) */
          const downloads = async (id: string): Promise<void> => {
            down.push(await anchorDown())
            download = await serverCpu('download', child.pid!, () => timed(() => run('curl', ['-sS', '--fail', '-u', auth, '-o', out, `${base}/drives/${id}/download/`]))).then(([s]) => s)
            identical &&= await sha256File(out) === imageSha
            await rm(out, { force: true })
            down.push(await anchorDown())
          }
          const uploads: Array<(last: boolean) => Promise<void>> = [
            async (last) => {
              let id = ''
              raw = await serverCpu('raw', child.pid!, () => timed(async () => {
                id = (await run('curl', ['-sS', '--fail', '-u', auth, '-T', image, '-H', 'Content-Type: application/octet-stream', `${base}/drives/upload/`])).trim()
              })).then(([s]) => s)
              at.raw = up.length
              if (last) await downloads(id)
              await settle('raw', id)
            },
            async (last) => {
              chunks.push(await anchorChunks())
              const parts = { init: 0, links: 0, tests: 0, chunks: 0, wait: 0, linkOwn: 0, chunkOwn: 0 }
              let id = ''
              chunked = await serverCpu('chunked', child.pid!, () => timed(async () => {
                let t = performance.now()
                const lap = (k: keyof typeof parts) => { const now = performance.now(); parts[k] += now - t; t = now }
                const d = (await api('POST', '/initupload/', { name: 'chunked', size, media: 'disk' })).objects[0]
                lap('init')
                await eachChunk(async n => {
                  const t0 = performance.now()
                  if (chunkProtocol === 'resumable') {
                    const q = new URLSearchParams({ resumableChunkNumber: String(n + 1), resumableChunkSize: String(chunkBytes), resumableTotalSize: String(size), resumableCurrentChunkSize: String(chunkEnd(n) - n * chunkBytes), resumableTotalChunks: String(chunkCount) })
                    const url = `${base}/drives/${d.uuid as string}/upload/?${q.toString()}`
                    if (testChunks) {
                      await testChunk(url, auth)
                      lap('tests')
                    }
                    await sendChunk(url, n, auth)
                    lap('chunks')
                    parts.chunkOwn += performance.now() - t0
                    return
                  }
                  const { link } = await api('POST', `/drives/${d.uuid}/action/?do=upload_chunk`, { chunk_number: n, chunk_size: chunkBytes })
                  lap('links')
                  const t1 = performance.now()
                  parts.linkOwn += t1 - t0
                  await sendChunk(`http://127.0.0.1:${port}${link as string}`, n)
                  lap('chunks')
                  parts.chunkOwn += performance.now() - t1
                })
                await waitJob(d.jobs[0].uuid)
                lap('wait')
                id = d.uuid as string
              })).then(([s]) => s)
              client.push(parts)
              at.chunked = up.length
              if (last) await downloads(id)
              await settle('chunked', id)
              chunks.push(await anchorChunks())
            },
            async (last) => {
              let id = ''
              multipart = await serverCpu('multipart', child.pid!, () => timed(async () => {
                const data = JSON.stringify({ method: 'drives.upload', params: [{ name: 'multipart', media: 'disk' }] })
                const res = JSON.parse(await run('curl', ['-sS', '--fail', '-u', auth, '-F', `data=${data}`, '-F', `file=@${image};type=application/octet-stream`, `${base}/_upload/`])) as { job_id: string }
                const job = await waitJob(res.job_id)
                id = (job.resources as string[]).map(u => u.split('/').at(-2)).find(Boolean) as string
              })).then(([s]) => s)
              at.multipart = up.length
              if (last) await downloads(id)
              await settle('multipart', id)
            }
          ]
          if (Math.abs(round) % 2 === 1) uploads.reverse()
          up.push(await anchorUp())
          for (const [i, upload] of uploads.entries()) {
            await upload(i === uploads.length - 1)
            up.push(await anchorUp())
          }
          if (round < 0) {
            // a warm-up round (the service's first uploads also compile its code): not counted
            client.pop()
            bareChunkOwn.length = 0
            continue
          }
          // the anchors on either side of each contender (at.x: the anchor runs made before it)
          const around = (k: 'raw' | 'chunked' | 'multipart') => mean(up[at[k]! - 1], up[at[k]!])
          samples.push({
            bareUp: median(up),
            bareChunks: mean(chunks[0], chunks[1]),
            bareDown: mean(down[0], down[1]),
            raw,
            chunked,
            multipart,
            download,
            around: { raw: around('raw'), chunked: around('chunked'), multipart: around('multipart') }
          })
          cpus.push(used as Sample)
          sysFaults.push(sf)
          gcs.push(gc)
        }
        const shas = (['raw', 'chunked', 'multipart'] as const).map(k => `${k} ${shaOk[k] ? 'ok' : 'DIFFERS'}`).join(', ')
        const m = (k: string) => `${median(client.map(c => c[k])).toFixed(0)} ms`
        // the mean of the counted rounds' requests: `sums` of their times over `count` requests
        const ownMean = (sums: number[], count: number) => (sums.reduce((a, b) => a + b, 0) / Math.max(1, count)).toFixed(1)
        const chunkedClient = `initupload ${m('init')}, ${chunkProtocol === 'links' ? `${chunkCount} link requests ${m('links')}` : 'no link requests (resumable.js)'}, ${testChunks ? `${chunkCount} chunk tests (GET, 404) ${m('tests')}, ` : ''}${chunkCount} chunk uploads ${m('chunks')}, job wait after the last answer ${m('wait')}` +
          (parallel > 1
            ? `; each request's own time, mean (the requests overlap, so the split above is wall-clock laps): ${chunkProtocol === 'links' ? `link ${ownMean(client.map(c => c.linkOwn), client.length * chunkCount)} ms, ` : ''}chunk${testChunks ? ' with its GET' : ''} ${ownMean(client.map(c => c.chunkOwn), client.length * chunkCount)} ms, the bare server's chunk${testChunks ? ' with its GET' : ''} ${ownMean(bareChunkOwn, bareChunkOwn.length)} ms`
            : '')
        const pick = (k: Contender) => median(samples.map(x => x[k]))
        // the median, and each round's figure when there are several (a slow round shows which contender paid)
        const cpuOf = (k: Contender) => `${median(cpus.map(x => x[k])).toFixed(2)} s` + (cpus.length > 1 ? ` (${cpus.map(x => x[k].toFixed(2)).join('/')})` : '')
        const gcOf = (k: Contender) => gcs.map(x => x[k]).join('/')
        const serverCpuLine = `anchor up ${cpuOf('bareUp')}, raw ${cpuOf('raw')}, chunked ${cpuOf('chunked')}, multipart ${cpuOf('multipart')}; anchor down ${cpuOf('bareDown')}, download ${cpuOf('download')}` +
          `; the service's major GCs in each round: raw ${gcOf('raw')}, chunked ${gcOf('chunked')}, multipart ${gcOf('multipart')}, download ${gcOf('download')}`
        const sfOf = (k: Contender) => `${median(sysFaults.map(x => x[k]?.sys ?? 0)).toFixed(2)} s, ${(median(sysFaults.map(x => x[k]?.faults ?? 0)) / 1000).toFixed(1)}k faults`
        const serverSysLine = (['bareUp', 'raw', 'chunked', 'multipart', 'bareDown', 'download'] as const).map(k => `${k === 'bareUp' ? 'anchor up' : k === 'bareDown' ? 'anchor down' : k} ${sfOf(k)}`).join(', ')
        return {
          size,
          samples,
          bareUp: pick('bareUp'),
          bareChunks: pick('bareChunks'),
          bareDown: pick('bareDown'),
          raw: pick('raw'),
          chunked: pick('chunked'),
          multipart: pick('multipart'),
          download: pick('download'),
          baseHwm,
          hwm: await memory(child.pid!),
          identical,
          shas,
          splits,
          chunkedClient,
          serverCpuLine,
          serverSysLine
        }
      } finally {
        await close()
        await stop(child)
        await stop(bare.child)
        await rm(work, { recursive: true, force: true })
      }
    })
  }

  const mbps = (size: number, s: number) => `${(size / MiB / s).toFixed(0)} MiB/s`
  const cell = (size: number, s: number) => `${s.toFixed(2)} s ${mbps(size, s)}`.padEnd(19)
  // --load: CPU burners for the whole run, ended (by their own handles) whatever happens
  const stopBurners = startBurners(burners)
  try {
    console.log(`transfer bench: sizes ${sizes.join(', ')} MiB, chunks of ${chunkBytes / MiB} MiB sent ${chunkProtocol === 'links' ? 'to their links (§5.2)' : 'as resumable.js sends them (§5.3, method octet)'} with ${chunkClient === 'curl' ? 'curl -T' : 'Node http'} ${parallel === 1 ? 'one at a time' : `${parallel} at a time`}, ${rounds} round${rounds > 1 ? 's (medians)' : ''} after ${warmups} warm-up round${warmups === 1 ? '' : 's'} (not counted); ${(fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^processor/gm) ?? []).length} cores`)
    console.log(describeLoad(burners))
    console.log(`load average at start: ${load()}`)
    const rows: Row[] = []
    for (const s of sizes) rows.push(await benchSize(s))
    console.log('\nimage    | bare pipe+fsync up | bare chunks+fsync  | bare stream down   | raw curl -T        | chunked            | multipart curl -F  | curl -o download   | peak RSS start→end | bytes / job sha256')
    for (const r of rows) {
      console.log([`${r.size / MiB} MiB`.padEnd(8), cell(r.size, r.bareUp), cell(r.size, r.bareChunks), cell(r.size, r.bareDown), cell(r.size, r.raw), cell(r.size, r.chunked), cell(r.size, r.multipart), cell(r.size, r.download),
        `${(r.baseHwm / MiB).toFixed(0)} → ${(r.hwm / MiB).toFixed(0)} MiB`.padEnd(18), `${r.identical ? 'identical' : 'DIFFER'} / ${r.shas}`].join(' | '))
    }
    // each round's ratios (the anchor and the service measured side by side); the last line gives their medians
    const ratios = (x: Round) => ({ raw: x.around.raw / x.raw, chunked: x.around.chunked / x.chunked, chunkedVsBareChunks: x.bareChunks / x.chunked, multipart: x.around.multipart / x.multipart, download: x.bareDown / x.download })
    const x = (n: number) => n.toFixed(2) + 'x'
    for (const r of rows) {
      for (const [kind, line] of Object.entries(r.splits)) console.log(`${r.size / MiB} MiB ${kind.padEnd(9)} job log: ${line}`)
      console.log(`${r.size / MiB} MiB chunked   client: ${r.chunkedClient}`)
      console.log(`${r.size / MiB} MiB server CPU (user + system, all threads): ${r.serverCpuLine}`)
      console.log(`${r.size / MiB} MiB server system CPU and minor page faults: ${r.serverSysLine}`)
      if (r.samples.length > 1) {
        console.log(`${r.size / MiB} MiB rounds    ` + r.samples.map(ratios).map(q => `raw ${x(q.raw)} chunked ${x(q.chunked)} (bare chunks ${x(q.chunkedVsBareChunks)}) multipart ${x(q.multipart)} download ${x(q.download)}`).join(' | '))
      }
    }
    console.log(`load average at end: ${load()}`)
    console.log('clonejobs/bare: ' + rows.map(r => {
      const q = r.samples.map(ratios)
      const m = (k: keyof ReturnType<typeof ratios>) => x(median(q.map(v => v[k])))
      return `${rows.length > 1 ? `${r.size / MiB} MiB: ` : ''}raw upload ${m('raw')}, chunked upload ${m('chunked')} (vs the bare server taking the same chunks ${m('chunkedVsBareChunks')}), multipart upload ${m('multipart')}, download ${m('download')}`
    }).join('; '))
  } finally {
    stopBurners()
    await rm(dir, { recursive: true, force: true })
  }
}
