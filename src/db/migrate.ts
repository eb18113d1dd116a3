// Applies prisma/migrations with the Prisma CLI (`migrate deploy`), the tool made for it. The CLI
// costs seconds, so it runs only when the database lacks one of the migrations.
import { execFile } from 'node:child_process'
import fs from 'node:fs/promises'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import pg from 'pg'

const run = promisify(execFile)
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

async function localMigrations (): Promise<string[]> {
  const entries = await fs.readdir(path.join(root, 'prisma/migrations'), { withFileTypes: true })
  return entries.filter(e => e.isDirectory()).map(e => e.name).sort()
}

/** Names of committed migrations the database has not applied (all of them on a new database). */
export async function pendingMigrations (databaseUrl: string): Promise<string[]> {
  const wanted = await localMigrations()
  const client = new pg.Client({ connectionString: databaseUrl })
  await client.connect()
  try {
    const table = await client.query("SELECT to_regclass('_prisma_migrations') AS t")
    if (!table.rows[0].t) return wanted
    const applied = await client.query('SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL')
    const done = new Set(applied.rows.map(r => r.migration_name as string))
    return wanted.filter(m => !done.has(m))
  } finally {
    await client.end()
  }
}

export async function runMigrations (databaseUrl: string, opts: { force?: boolean } = {}): Promise<string[]> {
  const pending = opts.force ? await localMigrations() : await pendingMigrations(databaseUrl)
  if (pending.length === 0) return []
  const cli = createRequire(import.meta.url).resolve('prisma/build/index.js')
  await run(process.execPath, [
    // see the comment in this preload: it lets the CLI exit as soon as it is done
    '--require', path.join(root, 'scripts/prisma-unref-timers.cjs'),
    cli, 'migrate', 'deploy'
  ], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: databaseUrl, CHECKPOINT_DISABLE: '1', PRISMA_HIDE_UPDATE_MESSAGE: '1' },
    maxBuffer: 16 * 1024 * 1024
  })
  return pending
}
