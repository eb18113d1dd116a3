// In-process migrations: an empty database gets every migration once, recorded the way Prisma
// records them, so the Prisma CLI's own `migrate status` agrees; a second run, or two at once, apply nothing twice.
import t from 'tap'
import { execFile } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import pg from 'pg'
import { MIGRATIONS_DIR, pendingMigrations, runMigrations } from '../../src/db/migrate.ts'
import { ROOT, databaseUrl, testServerState } from '../setup/test-db.ts'

t.test('migrations apply once, in Prisma\'s format, and `prisma migrate status` agrees', async t => {
  const state = await testServerState()
  const name = `clonejobs_m_${randomBytes(6).toString('hex')}`
  const admin = new pg.Client({ connectionString: state.adminUrl })
  await admin.connect()
  await admin.query(`CREATE DATABASE "${name}"`)
  t.teardown(async () => {
    await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
    await admin.end()
  })
  const url = databaseUrl(state, name)
  const names = fs.readdirSync(MIGRATIONS_DIR, { withFileTypes: true }).filter(e => e.isDirectory()).map(e => e.name).sort()
  t.ok(names.length > 0)
  t.same(await pendingMigrations(url), names, 'an empty database lacks every migration')

  // two starts at once: the advisory lock lets one apply, the other finds nothing left
  const [a, b] = await Promise.all([runMigrations(url), runMigrations(url)])
  t.same([...a, ...b].sort(), names, 'each migration applied exactly once')
  t.same(await runMigrations(url), [], 'a second run applies nothing')

  const client = new pg.Client({ connectionString: url })
  await client.connect()
  const rows = (await client.query('SELECT migration_name, checksum, finished_at IS NOT NULL AS finished, applied_steps_count, logs, rolled_back_at FROM _prisma_migrations ORDER BY migration_name')).rows
  const jobs = await client.query("SELECT to_regclass('jobs') AS t")
  await client.end()
  t.ok(jobs.rows[0].t, 'the schema exists')
  t.same(rows, names.map(n => ({
    migration_name: n,
    checksum: createHash('sha256').update(fs.readFileSync(path.join(MIGRATIONS_DIR, n, 'migration.sql'))).digest('hex'),
    finished: true,
    applied_steps_count: 1,
    logs: null,
    rolled_back_at: null
  })), 'rows as Prisma writes them')

  const status = await promisify(execFile)(process.execPath, [path.join(ROOT, 'node_modules/prisma/build/index.js'), 'migrate', 'status'], {
    cwd: ROOT, env: { ...process.env, DATABASE_URL: url, CHECKPOINT_DISABLE: '1', PRISMA_HIDE_UPDATE_MESSAGE: '1' }
  })
  t.match(status.stdout, /Database schema is up to date/, 'the Prisma CLI agrees')
})
