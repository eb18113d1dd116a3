// Many hosts, proven on one machine (issue 16 item 5): two real service processes, each with its
// own data folder and port, on one PostgreSQL database and one Ceph pool. A drive uploaded through
// host A is cloned, downloaded and deleted through host B. Then host A, running a drive_flatten,
// is killed with SIGKILL; B's worker takes the job over once the lease (5 s here) has expired and
// finishes it: the clone is detached, the source snapshot gone, nothing leaked, one success.
// Run by `npm run test:rbd`.
import { createHash, randomBytes } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { createTestDatabase } from '../helpers/db.ts'
import { processesMentioning, serveCommand, serveOnFreePort, type Service } from '../helpers/service.ts'
import { createDatabase } from '../../src/db/client.ts'
import { addAccount } from '../../src/features/accounts/service.ts'
import { RbdDriveStorage } from '../../src/storage/index.ts'

const MiB = 1024 * 1024
const GiB = 1024 * MiB
const conf = process.env.CEPH_CONF
if (conf === undefined || conf === '') throw new Error('CEPH_CONF must name the test cluster (npm run test:rbd sets it)')
const pool = process.env.RBD_POOL || 'rbd'
const LEASE_SECONDS = 5

const databaseUrl = await createTestDatabase(t)
const { prisma, close } = createDatabase(databaseUrl, { max: 2 })
t.teardown(close)
const email = 'hosts@example.com'
const password = 'correct horse battery'
await addAccount(prisma, email, password)
const auth = { authorization: 'Basic ' + Buffer.from(`${email}:${password}`).toString('base64') }
const json = { ...auth, 'content-type': 'application/json' }

interface Host { name: string, svc: Service, base: string }

/** One service process of a host: its own data folder (per host) and port, the shared database and pool. */
async function serve (name: string, dataDir: string, role: 'all' | 'api' | 'worker'): Promise<Host> {
  const { svc, port } = await serveOnFreePort(t, port => ({
    ...process.env,
    DATABASE_URL: databaseUrl,
    DATA_DIR: dataDir,
    PORT: String(port),
    STORAGE: 'rbd',
    CEPH_CONF: conf,
    RBD_POOL: pool,
    JOB_LEASE_SECONDS: String(LEASE_SECONDS),
    LOG_LEVEL: 'info',
    BOOTSTRAP_ACCOUNT: 'false',
    ROLE: ''
  }), serveCommand(role))
  return { name, svc, base: `http://127.0.0.1:${port}` }
}

function dataFolder (host: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `clonejobs-host-${host}-`))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

async function call (host: Host, method: string, url: string, body?: unknown): Promise<Response> {
  return await fetch(host.base + url, { method, headers: body === undefined ? auth : json, body: body === undefined ? undefined : JSON.stringify(body) })
}

async function until<T> (what: string, check: () => Promise<T | undefined | false>, ms = 120_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await check()
    if (v !== undefined && v !== false) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, everyMs))
  }
}

const FINISHED = ['success', 'error', 'cancelled']
const treeDone = (j: any): boolean => FINISHED.includes(j.state) && (j.children ?? []).every(treeDone)

/** Polls a job through `host`'s API until it and every job below it are finished. */
async function finishedTree (host: Host, id: string): Promise<any> {
  return await until(`job ${id} to finish`, async () => {
    const j = await (await call(host, 'GET', `/api/2.0/jobs/${id}/`)).json() as any
    return treeDone(j) ? j : undefined
  })
}

async function upload (host: Host, data: Buffer): Promise<string> {
  const res = await fetch(`${host.base}/api/2.0/drives/upload/`, { method: 'POST', headers: { ...auth, 'content-type': 'application/octet-stream' }, body: data })
  if (res.status !== 201) throw new Error(`upload through ${host.name}: ${res.status} ${await res.text()}`)
  return await res.text()
}

async function cloneOf (host: Host, uuid: string): Promise<{ uuid: string, job: string }> {
  const res = await call(host, 'POST', `/api/2.0/drives/${uuid}/action/?do=clone`, { name: 'copy' })
  if (res.status !== 202) throw new Error(`clone through ${host.name}: ${res.status} ${await res.text()}`)
  const copy = ((await res.json()) as { objects: Array<{ uuid: string, jobs: Array<{ uuid: string }> }> }).objects[0]
  const job = await prisma.job.findFirstOrThrow({ where: { operation: 'drive_clone', params: { path: ['driveId'], equals: copy.uuid } } })
  return { uuid: copy.uuid, job: job.id }
}

/** Deletes through `host`; a drive whose download or flatten job is still settling answers 503 for a moment. */
async function remove (host: Host, uuid: string): Promise<void> {
  await until(`drive ${uuid} to be deleted`, async () => {
    const res = await call(host, 'DELETE', `/api/2.0/drives/${uuid}/`)
    if (res.status !== 204 && res.status !== 503) throw new Error(`delete through ${host.name}: ${res.status} ${await res.text()}`)
    return res.status === 204
  })
}

const rbd = (...args: string[]): string => execFileSync('rbd', ['--conf', conf, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
/** Every image and snapshot in the pool whose name holds one of `ids`. */
function poolNames (ids: string[]): string[] {
  let all: Array<{ image: string, snapshot?: string }> = []
  for (let tries = 1; ; tries++) {
    try {
      all = JSON.parse(rbd('ls', '--long', '--format', 'json', pool))
      break
    } catch (err) {
      // `ls --long` opens every image: one removed meanwhile (by this or another test) fails it
      if (tries >= 10) throw err
    }
  }
  return all.map(i => i.snapshot ? `${i.image}@${i.snapshot}` : i.image).filter(n => ids.some(id => n.includes(id))).sort()
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')
const dataA = dataFolder('a')
const dataB = dataFolder('b')
const a = await serve('A', dataA, 'all')
const bApi = await serve('B', dataB, 'api')

t.test('a drive uploaded through host A is cloned, downloaded and deleted through host B', async t => {
  const data = randomBytes(8 * MiB + 5)
  const source = await upload(a, data)
  t.equal((await (await call(bApi, 'GET', `/api/2.0/drives/${source}/`)).json() as any).status, 'unmounted', 'B sees the drive A made')

  const copy = await cloneOf(bApi, source)
  const job = await finishedTree(bApi, copy.job)
  t.equal(job.state, 'success', 'the clone asked of B is done')
  t.same(job.children.map((c: any) => [c.operation, c.state]), [['drive_flatten', 'success']], 'and detached by its flatten child')
  t.notOk(JSON.parse(rbd('info', '--format', 'json', `${pool}/${copy.uuid}`)).parent, 'the clone has no parent any more')

  const res = await call(bApi, 'GET', `/api/2.0/drives/${copy.uuid}/download/`)
  t.equal(res.status, 200)
  const got = Buffer.from(await res.arrayBuffer())
  t.equal(got.length, data.length, 'the whole image')
  t.equal(sha256(got), sha256(data), 'B serves the bytes uploaded through A (sha256)')

  await remove(bApi, copy.uuid)
  await remove(bApi, source)
  for (const id of [source, copy.uuid]) t.equal((await call(a, 'GET', `/api/2.0/drives/${id}/`)).status, 404, `A sees ${id} gone`)
  await until('the images to go', async () => poolNames([source, copy.uuid]).length === 0)
  t.pass('no image or snapshot of either drive is left in the pool')
})

t.test('host A killed mid-flatten: B\'s worker takes the job over after the lease and finishes it once', async t => {
  // a large parent with a few written extents: flattening walks all its objects, which takes seconds
  const data = randomBytes(4 * MiB)
  const source = await upload(a, data)
  const size = 200 * GiB
  const grown = await call(a, 'POST', `/api/2.0/drives/${source}/action/?do=resize`, { size })
  t.equal(grown.status, 202, 'resized through A')
  await until('the resize', async () => (await (await call(a, 'GET', `/api/2.0/drives/${source}/`)).json() as any).status === 'unmounted' && (await prisma.drive.findUniqueOrThrow({ where: { id: source } })).size === BigInt(size))

  // B's process is api-only now, so the clone and its flatten can only be claimed by A
  const copy = await cloneOf(bApi, source)
  const aPid = a.svc.child.pid!
  const flattenSpec = `${pool}/${copy.uuid}`
  // the rbd command line, NUL-separated: `... flatten <pool>/<image>`
  const flattening = () => processesMentioning(`flatten\0${flattenSpec}\0`)
  // A's rbd flatten is frozen (SIGSTOP) as soon as it shows, then let run in short bursts until A
  // has recorded some progress: the kill lands mid-flatten however fast this machine flattens
  // (a quiet one flattened all of it between two looks, and the test saw nothing to cut)
  const [rbdPid] = await until('A to run rbd flatten', async () => { const p = flattening(); return p.length > 0 ? p : undefined }, 120_000, 5)
  process.kill(rbdPid, 'SIGSTOP')
  const flatten = await until('A to be flattening', async () => {
    const j = await prisma.job.findFirst({ where: { operation: 'drive_flatten', parentId: copy.job } })
    if (j && j.state === 'started' && j.bytesDone > 0n && j.bytesDone < BigInt(size)) return j
    process.kill(rbdPid, 'SIGCONT')
    await new Promise(resolve => setTimeout(resolve, 20))
    process.kill(rbdPid, 'SIGSTOP')
    // A's progress writes are a few per second
    await new Promise(resolve => setTimeout(resolve, 300))
    return undefined
  })
  t.match(flatten.lockedBy, new RegExp(`^[^:]+:${aPid}:`), 'A claimed the flatten')
  t.equal(flatten.attempts, 1)
  t.ok(flattening().includes(rbdPid), 'A runs rbd flatten (stopped mid-way)')

  a.svc.child.kill('SIGKILL')
  await a.svc.exited
  const killedAt = Date.now()
  // the parent-death signal (TERM) waits while the process is stopped: let it be delivered
  try { process.kill(rbdPid, 'SIGCONT') } catch {}
  // the rbd process of the dead service stops with it (parent-death signal): no orphan goes on
  await until('A\'s rbd flatten to stop', async () => flattening().length === 0, 30_000)
  t.pass('no rbd process of A outlives it')
  const leftBehind = await prisma.job.findUniqueOrThrow({ where: { id: flatten.id } })
  t.equal(leftBehind.state, 'started', 'the job stays started under the dead lease')
  t.ok(JSON.parse(rbd('info', '--format', 'json', flattenSpec)).parent, 'the clone is still a child: the flatten was cut')

  const bWorker = await serve('B', dataB, 'worker')
  // B waits out the dead client's watch on the image (~30 s), then flattens with the object map
  // off (A's cut flatten may have recorded objects it never wrote): slower than a first flatten
  const done = await until('the flatten to finish', async () => {
    const j = await prisma.job.findUniqueOrThrow({ where: { id: flatten.id } })
    return FINISHED.includes(j.state) ? j : undefined
  }, 400_000)
  t.equal(done.state, 'success', 'B finished it')
  const lines = (s: Service) => s.output().split('\n').filter(l => l.includes(flatten.id))
  // attempt 1 was A's; B's takeover is attempt 2 (a third only if B itself lost the lease on an
  // overloaded machine, and then took the job over again)
  if (done.attempts !== 2) t.comment(lines(bWorker.svc).join('\n'))
  t.ok(done.attempts >= 2, `attempts recorded: ${done.attempts}`)
  t.notOk(lines(a.svc).some(l => /"attempts":[2-9]/.test(l)), 'A ran only the first attempt')
  t.match(done.result, { flattened: true, bytes: size })
  t.ok((done.finishedAt!.getTime() - killedAt) >= LEASE_SECONDS * 1000 - 500, 'not before A\'s lease expired')
  t.ok(lines(bWorker.svc).some(l => l.includes('taken over from a stopped process; resuming it')), 'B resumed it as a takeover')
  // B logs the success after the commit the loop above saw, and its output arrives through a pipe
  await until('B to log the job\'s success', async () => lines(bWorker.svc).some(l => l.includes('job succeeded')), 10_000)
  const successes = [...lines(a.svc), ...lines(bWorker.svc)].filter(l => l.includes('job succeeded'))
  t.equal(successes.length, 1, 'one success, logged by B')
  t.ok(lines(bWorker.svc).some(l => l.includes('job succeeded')))
  t.equal((await finishedTree(bApi, copy.job)).state, 'success', 'the clone job tree ends in success')

  t.notOk(JSON.parse(rbd('info', '--format', 'json', flattenSpec)).parent, 'the clone is flattened (no parent in rbd info)')
  t.same(poolNames([source, copy.uuid]), [copy.uuid, source].sort(), 'the source snapshot went with its last child; nothing else is left')
  const head = await fetch(`${bApi.base}/api/2.0/drives/${copy.uuid}/download/`, { headers: { ...auth, range: `bytes=0-${data.length - 1}` } })
  t.equal(head.status, 206)
  const got = Buffer.from(await head.arrayBuffer())
  t.equal(got.length, data.length, 'the range, whole')
  if (!got.equals(data)) {
    const firstDiff = got.findIndex((b, i) => b !== data[i])
    const store = new RbdDriveStorage({ pool, conf })
    const read = async (id: string) => { const p: Buffer[] = []; for await (const c of await store.createReadStream(id, { start: 0, end: data.length - 1 })) p.push(c as Buffer); return Buffer.concat(p) }
    t.comment(`first difference at ${firstDiff}; source reads ${sha256(await read(source))}, clone reads ${sha256(await read(copy.uuid))}, data ${sha256(data)}, got ${sha256(got)}`)
  }
  t.equal(sha256(got), sha256(data), 'the flattened clone holds the source data (a Range download through B)')

  await remove(bApi, copy.uuid)
  await remove(bApi, source)
  await until('the images to go', async () => poolNames([source, copy.uuid]).length === 0)
  t.pass('nothing of either drive is left in the pool')
})
