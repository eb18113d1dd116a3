// A PostgreSQL whose default isolation is not READ COMMITTED (a DBA's choice on some servers:
// `default_transaction_isolation = 'serializable'`). The service's transactions are written for
// READ COMMITTED: a claim skips rows locked by another worker, a write that waited on a row lock
// reads the row committed meanwhile. At SERIALIZABLE or REPEATABLE READ those writes failed with
// SQLSTATE 40001 whenever they overlapped: creates, clones and servers answered 500 and jobs ended
// in `internal error`. So every connection starts at READ COMMITTED (src/db/session.ts).
import t, { type Test } from 'tap'
import pg from 'pg'
import { buildTestApp, client, createUser, type Response } from '../helpers/app.ts'
import { createTestDatabase } from '../helpers/db.ts'
import { waitForAllJobs } from '../helpers/jobs.ts'
import { sessionUrl } from '../../src/db/session.ts'

async function appAt (t: Test, level: string) {
  const databaseUrl = await createTestDatabase(t)
  const admin = new pg.Client({ connectionString: databaseUrl })
  await admin.connect()
  const { rows: [{ db }] } = await admin.query<{ db: string }>('SELECT current_database() AS db')
  await admin.query(`ALTER DATABASE "${db}" SET default_transaction_isolation = '${level}'`)
  await admin.end()
  const plain = new pg.Client({ connectionString: databaseUrl })
  await plain.connect()
  const shown = (await plain.query<{ default_transaction_isolation: string }>('SHOW default_transaction_isolation')).rows[0].default_transaction_isolation
  await plain.end()
  const { app } = await buildTestApp(t, { databaseUrl, runWorkers: true })
  return { app, shown }
}

/**
 * Three accounts at once, each creating 12 drives in 12 concurrent requests, then cloning all of
 * them at once and making 4 servers that mount them: writes that overlap on the same tables,
 * the same drives and the job queue. Every answer's status is counted.
 */
async function overlappingWrites (t: Test, app: Awaited<ReturnType<typeof appAt>>['app']) {
  const statuses: number[] = []
  const failures: string[] = []
  const seen = (r: Response) => {
    statuses.push(r.statusCode)
    if (r.statusCode >= 500) failures.push(`${r.statusCode} ${r.body.slice(0, 200)}`)
    return r
  }
  const users = await Promise.all([1, 2, 3].map(() => createUser(app)))
  await Promise.all(users.map(async user => {
    const api = client(app, user)
    const made = await Promise.all(Array.from({ length: 12 }, (_, i) => api.post('/api/2.0/drives/', { name: `d${i}`, size: 1024 ** 3, media: 'disk' }).then(seen)))
    const ids = made.filter(r => r.statusCode === 201).map(r => r.json().objects[0].uuid as string)
    await waitForAllJobs(app, 30_000)
    await Promise.all(ids.map(id => api.post(`/api/2.0/drives/${id}/action/?do=clone`, {}).then(seen)))
    await Promise.all(ids.slice(0, 4).map((id, i) => api.post('/api/2.0/servers/', { name: `s${i}`, cpu: 1000, mem: 1024 ** 3, vnc_password: 'secret', drives: [{ dev_channel: '0:0', device: 'virtio', drive: id }] }).then(seen)))
  }))
  await waitForAllJobs(app, 30_000)
  t.same(failures, [], 'no request answered 5xx')
  t.equal(statuses.filter(s => s === 201).length, 3 * (12 + 4), 'every drive and server was made')
  t.equal(statuses.filter(s => s === 202).length, 3 * 12, 'every clone was accepted')
  const states = await app.dbPool.query<{ state: string, n: number }>('SELECT state, count(*)::int AS n FROM jobs GROUP BY state ORDER BY state')
  t.same(states.rows, [{ state: 'success', n: 3 * (12 + 12) }], 'every job (12 creates and 12 clones per account) succeeded')
  const drives = await app.dbPool.query<{ status: string, n: number }>('SELECT status, count(*)::int AS n FROM drives GROUP BY status ORDER BY status')
  t.same(drives.rows, [{ status: 'mounted', n: 3 * 4 }, { status: 'unmounted', n: 3 * 20 }], 'every drive and every clone is usable (those on a server mounted)')
}

for (const level of ['serializable', 'repeatable read']) {
  t.test(`on a database defaulting to ${level}: the service runs at READ COMMITTED and overlapping writes all succeed`, async t => {
    const { app, shown } = await appAt(t, level)
    t.equal(shown, level, 'the database defaults to the level')
    t.equal((await app.dbPool.query<{ default_transaction_isolation: string }>('SHOW default_transaction_isolation')).rows[0].default_transaction_isolation, 'read committed', 'the service\'s sessions run at READ COMMITTED')
    await overlappingWrites(t, app)
  })
}

t.test('sessionUrl: a value with a space reaches PostgreSQL whole, and wins over the URL\'s own', async t => {
  t.match(new URL(sessionUrl('postgresql://u@h/db')).searchParams.get('options'), /-c default_transaction_isolation=read\\ committed( |$)/)
  const url = new URL(await createTestDatabase(t))
  url.searchParams.set('options', '-c default_transaction_isolation=serializable')
  const c = new pg.Client({ connectionString: sessionUrl(url.toString(), { application_name: 'a b\\c' }) })
  await c.connect()
  try {
    t.equal((await c.query<{ default_transaction_isolation: string }>('SHOW default_transaction_isolation')).rows[0].default_transaction_isolation, 'read committed')
    t.equal((await c.query<{ application_name: string }>('SHOW application_name')).rows[0].application_name, 'a b\\c', 'a space and a backslash are escaped')
  } finally {
    await c.end()
  }
})
