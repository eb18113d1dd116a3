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
