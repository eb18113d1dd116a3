// One fresh database per test file, cloned from the migrated template, dropped afterwards.
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { databaseUrl, testServerState } from '../setup/test-db.ts'

interface Teardown { teardown: (fn: () => Promise<void> | void) => void }

export async function createTestDatabase (t: Teardown): Promise<string> {
  const state = await testServerState()
  const name = `clonejobs_t_${randomBytes(6).toString('hex')}`
  const admin = new pg.Client({ connectionString: state.adminUrl })
  await admin.connect()
  try {
    await admin.query(`CREATE DATABASE "${name}" TEMPLATE "${state.template}"`)
  } finally {
    await admin.end()
  }
  t.teardown(async () => {
    const c = new pg.Client({ connectionString: state.adminUrl })
    await c.connect()
    try {
      await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
    } finally {
      await c.end()
    }
  })
  return databaseUrl(state, name)
}

/**
 * Holds `SELECT … FOR NO KEY UPDATE` (or `mode`) on one row from a connection of its own, `client`,
 * so a job that updates that row waits there (a deterministic pause at a known step) until
 * `release` commits. Rows that merely reference it (foreign keys take KEY SHARE) can still be
 * written meanwhile.
 */
export async function lockRow (databaseUrl: string, table: 'drives' | 'jobs' | 'servers', id: string, mode: 'NO KEY UPDATE' | 'SHARE' = 'NO KEY UPDATE'): Promise<{ release: () => Promise<void>, client: pg.Client }> {
  const c = new pg.Client({ connectionString: databaseUrl })
  await c.connect()
  await c.query('BEGIN')
  const locked = await c.query(`SELECT id FROM ${table} WHERE id = $1::uuid FOR ${mode}`, [id])
  if (locked.rowCount !== 1) {
    await c.end()
    throw new Error(`no ${table} row ${id} to lock`)
  }
  let released = false
  return {
    client: c,
    release: async () => {
      if (released) return
      released = true
      try { await c.query('COMMIT') } finally { await c.end() }
    }
  }
}

/**
 * `pool` as the hot reads see it, noting the first prepared statement (text and values) sent
 * through it: the page statement of a list, to look up in pg_prepared_statements or EXPLAIN.
 */
export function recordFirstStatement (pool: pg.Pool): { pool: pg.Pool, first: () => { text: string, values: unknown[] } | undefined } {
  let first: { text: string, values: unknown[] } | undefined
  const recording = new Proxy(pool, {
    get: (target, key) => key === 'query'
      ? (config: string | { text: string, values: unknown[] }, values?: unknown[]) => {
          if (typeof config === 'object') first ??= config
          return target.query(config as string, values)
        }
      : Reflect.get(target, key)
  })
  return { pool: recording, first: () => first }
}
