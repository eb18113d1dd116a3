// The PostgreSQL server the tests run against, and a migrated template database on it that
// every test file clones (CREATE DATABASE ... TEMPLATE), so each file starts from a fresh schema.
//
// Server: TEST_DATABASE_URL or DATABASE_URL when set; otherwise an embedded PostgreSQL that a
// small daemon process keeps running for the whole `tap` run (test/setup/pg-daemon.ts).
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { runMigrations } from '../../src/db/migrate.ts'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const STATE_FILE = path.join(ROOT, '.tap', 'clonejobs-test-db.json')
const DAEMON_DIR = path.join(ROOT, 'data', 'test-pg')
const DAEMON_STATE = path.join(ROOT, 'data', 'test-pg.json')

export interface TestDbState {
  /** URL of the server's maintenance database, used to create and drop databases. */
  adminUrl: string
  template: string
  /** pid of the embedded daemon this run started, if any */
  daemonPid?: number
}

function withDatabase (url: string, database: string): string {
  const u = new URL(url)
  u.pathname = '/' + database
  return u.toString()
}

export function databaseUrl (state: TestDbState, database: string): string {
  return withDatabase(state.adminUrl, database)
}

function alive (pid: number): boolean {
  try { process.kill(pid, 0); return true } catch { return false }
}

async function startDaemon (): Promise<{ url: string, pid: number }> {
  if (fs.existsSync(DAEMON_STATE)) {
    const s = JSON.parse(fs.readFileSync(DAEMON_STATE, 'utf8')) as { url: string, pid: number }
    if (alive(s.pid)) return s
    fs.rmSync(DAEMON_STATE, { force: true })
  }
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'test/setup/pg-daemon.ts'), DAEMON_DIR, DAEMON_STATE], {
    cwd: ROOT, detached: true, stdio: 'ignore'
  })
  child.unref()
  for (let i = 0; i < 600; i++) {
    if (fs.existsSync(DAEMON_STATE)) return JSON.parse(fs.readFileSync(DAEMON_STATE, 'utf8'))
    if (child.exitCode !== null) break
    await sleep(100)
  }
  throw new Error('the embedded PostgreSQL for tests did not start; see data/test-pg.log')
}

async function migrationsHash (): Promise<string> {
  const dir = path.join(ROOT, 'prisma/migrations')
  const h = createHash('sha256')
  for (const name of fs.readdirSync(dir).sort()) {
    const file = path.join(dir, name, 'migration.sql')
    if (fs.existsSync(file)) h.update(name).update(fs.readFileSync(file))
  }
  return h.digest('hex').slice(0, 12)
}

/** Makes sure the server runs and the template for the current migrations exists. */
export async function setupTestServer (): Promise<TestDbState> {
  let adminUrl = process.env.TEST_DATABASE_URL || process.env.DATABASE_URL
  let daemonPid: number | undefined
  if (!adminUrl) {
    const daemon = await startDaemon()
    adminUrl = daemon.url
    daemonPid = daemon.pid
  }
  const template = `clonejobs_tpl_${await migrationsHash()}`
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  try {
    const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [template])
    if (exists.rowCount === 0) {
      const building = `${template}_${process.pid}`
      await admin.query(`DROP DATABASE IF EXISTS "${building}"`)
      await admin.query(`CREATE DATABASE "${building}"`)
      await runMigrations(withDatabase(adminUrl, building))
      try {
        await admin.query(`ALTER DATABASE "${building}" RENAME TO "${template}"`)
      } catch {
        await admin.query(`DROP DATABASE IF EXISTS "${building}"`) // another run won the race
      }
    }
  } finally {
    await admin.end()
  }
  const state: TestDbState = { adminUrl, template, daemonPid }
  fs.mkdirSync(path.dirname(STATE_FILE), { recursive: true })
  fs.writeFileSync(STATE_FILE, JSON.stringify(state))
  return state
}

export async function testServerState (): Promise<TestDbState> {
  if (fs.existsSync(STATE_FILE)) {
    const state = JSON.parse(fs.readFileSync(STATE_FILE, 'utf8')) as TestDbState
    const wanted = process.env.TEST_DATABASE_URL || process.env.DATABASE_URL
    const sameServer = wanted ? state.adminUrl === wanted : state.daemonPid !== undefined && alive(state.daemonPid)
    if (sameServer && state.template === `clonejobs_tpl_${await migrationsHash()}`) return state
  }
  return setupTestServer()
}

const RUNS_DIR = path.join(ROOT, '.tap', 'runs')

/** Records that a tap run (identified by its pid) uses the test server. */
export function registerRun (pid: number): void {
  fs.mkdirSync(RUNS_DIR, { recursive: true })
  fs.writeFileSync(path.join(RUNS_DIR, String(pid)), '')
}

/** Forgets a run; true when no other live run still uses the server. */
export function unregisterRun (pid: number): boolean {
  fs.rmSync(path.join(RUNS_DIR, String(pid)), { force: true })
  const others = fs.existsSync(RUNS_DIR) ? fs.readdirSync(RUNS_DIR).map(Number).filter(p => p !== pid && alive(p)) : []
  return others.length === 0
}

export function stopDaemon (): void {
  if (!fs.existsSync(DAEMON_STATE)) return
  const s = JSON.parse(fs.readFileSync(DAEMON_STATE, 'utf8')) as { pid: number }
  if (alive(s.pid)) process.kill(s.pid, 'SIGTERM')
}
