// Applies prisma/migrations in this process with pg, as `prisma migrate deploy` would: each pending
// migration.sql in one transaction, under an advisory lock so concurrent starts apply it once, and a
// row in `_prisma_migrations` in Prisma's own format (sha256 hex checksum), so `prisma migrate
// status` agrees. No CLI is spawned: that cost seconds at every start.
import { createHash, randomUUID } from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'

// src/db and dist/db are both two levels below the checkout
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
export const MIGRATIONS_DIR = path.join(root, 'prisma/migrations')
// the advisory lock key the Prisma schema engine takes too, so the CLI and this never overlap
const LOCK_KEY = 72707369

// the table exactly as the Prisma CLI creates it
const CREATE_TABLE = `CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
  "id" VARCHAR(36) PRIMARY KEY NOT NULL,
  "checksum" VARCHAR(64) NOT NULL,
  "finished_at" TIMESTAMPTZ,
  "migration_name" VARCHAR(255) NOT NULL,
  "logs" TEXT,
  "rolled_back_at" TIMESTAMPTZ,
  "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
  "applied_steps_count" INTEGER NOT NULL DEFAULT 0
)`

interface Migration { name: string, sql: string, checksum: string }

async function localMigrations (): Promise<Migration[]> {
  const entries = await fs.readdir(MIGRATIONS_DIR, { withFileTypes: true })
  const names = entries.filter(e => e.isDirectory()).map(e => e.name).sort()
  return Promise.all(names.map(async name => {
    const sql = await fs.readFile(path.join(MIGRATIONS_DIR, name, 'migration.sql'), 'utf8')
    return { name, sql, checksum: createHash('sha256').update(sql).digest('hex') }
  }))
}

async function appliedNames (client: pg.Client): Promise<Set<string>> {
  const table = await client.query("SELECT to_regclass('_prisma_migrations') AS t")
  if (!table.rows[0].t) return new Set()
  const rows = await client.query('SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL')
  return new Set(rows.rows.map(r => r.migration_name as string))
}

/** Names of committed migrations the database has not applied (all of them on a new database). */
export async function pendingMigrations (databaseUrl: string): Promise<string[]> {
  const client = new pg.Client({ connectionString: databaseUrl })
  await client.connect()
  try {
    const done = await appliedNames(client)
    return (await localMigrations()).filter(m => !done.has(m.name)).map(m => m.name)
  } finally {
    await client.end()
  }
}

/** Applies the pending migrations and returns their names. */
export async function runMigrations (databaseUrl: string): Promise<string[]> {
  const [migrations, client] = await Promise.all([localMigrations(), (async () => {
    const c = new pg.Client({ connectionString: databaseUrl })
    await c.connect()
    return c
  })()])
  const applied: string[] = []
  try {
    // fast path: nothing to do, no lock taken
    let done = await appliedNames(client)
    if (migrations.every(m => done.has(m.name))) return []
    await client.query('SELECT pg_advisory_lock($1)', [LOCK_KEY])
    try {
      await client.query(CREATE_TABLE)
      done = await appliedNames(client) // another process may have applied them while we waited
      for (const m of migrations) {
        if (done.has(m.name)) continue
        const id = randomUUID()
        await client.query('BEGIN')
        try {
          await client.query('INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at) VALUES ($1, $2, $3, now())', [id, m.checksum, m.name])
          // a migration file of this package, run as written (several statements: no parameters possible)
          await client.query(m.sql)
          await client.query('UPDATE _prisma_migrations SET finished_at = clock_timestamp(), applied_steps_count = 1 WHERE id = $1', [id])
          await client.query('COMMIT')
        } catch (err) {
          await client.query('ROLLBACK')
          throw new Error(`migration ${m.name} failed: ${(err as Error).message}`, { cause: err })
        }
        applied.push(m.name)
      }
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [LOCK_KEY]).catch(() => {})
    }
    return applied
  } finally {
    await client.end()
  }
}
