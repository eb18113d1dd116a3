// A PostgreSQL whose TimeZone is not UTC (initdb takes the machine's; managed servers are often
// set to a local zone). Prisma's pg adapter reads and writes timestamptz as if the session were
// UTC (prisma/orm#26786), so every connection of the service starts in UTC (src/db/session.ts).
// Without that, on Asia/Kolkata (+05:30) the jobs showed times 5.5 h ahead (and with DateStyle
// 'SQL, DMY' too, creating a drive did not even answer with it); on America/New_York
// (-05:00) a retry whose Idempotency-Key was held by a request still being answered took the key
// for abandoned (read as 5 h old) and did the work again, and the 3-day purge took jobs 5 h early.
import t, { type Test } from 'tap'
import { createHash, randomUUID } from 'node:crypto'
import pg from 'pg'
import stableStringify from 'safe-stable-stringify'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { createTestDatabase } from '../helpers/db.ts'
import { waitForJob } from '../helpers/jobs.ts'
import { sessionUrl } from '../../src/db/session.ts'
import type { Config } from '../../src/config.ts'

type Teardown = Parameters<typeof createTestDatabase>[0]

/** An app on a database of its own whose sessions default to `zone`. */
async function appInZone (t: Teardown, zone: string, config: Partial<Config> = {}, dateStyle?: string) {
  const databaseUrl = await createTestDatabase(t)
  const admin = new pg.Client({ connectionString: databaseUrl })
  await admin.connect()
  const { rows: [{ db }] } = await admin.query<{ db: string }>('SELECT current_database() AS db')
  await admin.query(`ALTER DATABASE "${db}" SET TimeZone = '${zone}'`)
  if (dateStyle) await admin.query(`ALTER DATABASE "${db}" SET DateStyle = '${dateStyle}'`)
  await admin.end()
  // a connection of its own (not the service's) sees the zone
  const plain = new pg.Client({ connectionString: databaseUrl })
  await plain.connect()
  const shown = (await plain.query<{ TimeZone: string }>('SHOW TimeZone')).rows[0].TimeZone
  await plain.end()
  const { app } = await buildTestApp(t, { databaseUrl, config })
  const user = await createUser(app)
  return { app, api: client(app, user), user, shown }
}

const near = (t: Test, wire: string | null | undefined, from: number, to: number, what: string) => {
  t.ok(typeof wire === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$/.test(wire), `${what} is a CloudSigma timestamp (${String(wire)})`)
  const ms = Date.parse(String(wire))
  t.ok(ms >= from - 1000 && ms <= to + 1000, `${what} is the real time (${String(wire)}, within ${new Date(from).toISOString()} .. ${new Date(to).toISOString()})`)
}

t.test('on Asia/Kolkata (+05:30) with DateStyle SQL, DMY: the times shown are the real ones, by every read path', async t => {
  // and writing times as 'DD/MM/YYYY HH:MM:SS IST' unless told otherwise
  const { app, api, shown } = await appInZone(t, 'Asia/Kolkata', {}, 'SQL, DMY')
  t.equal(shown, 'Asia/Kolkata', 'the database defaults to the zone')
  t.equal((await app.dbPool.query<{ TimeZone: string }>('SHOW TimeZone')).rows[0].TimeZone, 'UTC', 'the service\'s sessions run in UTC')
  t.match((await app.dbPool.query<{ DateStyle: string }>('SHOW DateStyle')).rows[0].DateStyle, /^ISO\b/, 'and write times in ISO')
  const from = Date.now()
  const drive = (await api.post('/api/2.0/drives/', { name: 'tz', size: 1024 ** 3, media: 'disk' })).json().objects[0]
  const [ref] = (await api.get(`/api/2.0/drives/${drive.uuid}/`)).json().jobs
  await waitForJob(app, ref.uuid)
  const to = Date.now()
  // the list and one job (their own SQL), the Prisma path (__contains), the cursor path
  const listed = (await api.get('/api/2.0/jobs/')).json().objects[0]
  const got = (await api.get(`/api/2.0/jobs/${ref.uuid}/`)).json()
  const viaPrisma = (await api.get('/api/2.0/jobs/?state__contains=success')).json().objects[0]
  const cursorPage = (await api.get('/api/2.0/jobs/?cursor=&order_by=-last_modified')).json()
  const viaCursor = cursorPage.objects[0]
  for (const [name, job] of Object.entries({ list: listed, get: got, prisma: viaPrisma, cursor: viaCursor })) {
    t.equal(job.uuid, ref.uuid, `${name}: the drive's job`)
    for (const field of ['created', 'last_modified', 'started_at', 'finished_at']) near(t, job[field], from, to, `${name} ${field}`)
  }
  // and Prisma reads the same instant
  const row = await app.prisma.job.findUniqueOrThrow({ where: { id: ref.uuid } })
  t.ok(Math.abs(row.created.getTime() - from) < 5000, 'Prisma reads the real time')
})

t.test('on America/New_York (-05:00): a key still in use is not taken for abandoned, and purges keep their age', async t => {
  const { app, api, user } = await appInZone(t, 'America/New_York')
  // a request with this key is being answered (its row has no status yet), claimed just now
  const body = { name: 'tz', size: 1024 ** 3, media: 'disk' }
  // the fingerprint src/plugins/idempotency.ts makes of it: no query, a JSON body with its keys sorted
  const print = createHash('sha256').update(`\nj\n${String(stableStringify(body))}`).digest('hex')
  await app.prisma.$executeRaw`INSERT INTO idempotency_keys (owner_id, method, path, key, fingerprint) VALUES (${user.id}::uuid, 'POST', '/api/2.0/drives/', 'tz-key', ${print})`
  const retry = await app.inject({ method: 'POST', url: '/api/2.0/drives/', headers: { authorization: user.authorization, 'content-type': 'application/json', 'idempotency-key': 'tz-key' }, payload: body })
  t.equal(retry.statusCode, 503, 'the retry waits for the first answer')
  t.equal(retry.json()[0]?.error_type, 'concurrency')
  t.equal((await api.get('/api/2.0/drives/')).json().meta.total_count, 0, 'the work was not done a second time')

  // finished 3 days less 2 hours ago: kept by the 3-day retention; 3 days and 1 hour ago: purged
  const keep = randomUUID()
  const old = randomUUID()
  await app.prisma.$executeRaw`
    INSERT INTO jobs (id, owner_id, root_id, operation, state, finished_at) VALUES
      (${keep}::uuid, ${user.id}::uuid, ${keep}::uuid, 'drive_clone', 'success', now() - interval '3 days' + interval '2 hours'),
      (${old}::uuid, ${user.id}::uuid, ${old}::uuid, 'drive_clone', 'success', now() - interval '3 days 1 hour')`
  const r = await app.purgeJobs()
  t.equal(r.jobs, 1, 'one tree purged')
  t.ok(await app.prisma.job.findUnique({ where: { id: keep } }), 'the job inside the retention stays')
  t.notOk(await app.prisma.job.findUnique({ where: { id: old } }), 'the older one is gone')
})

t.test('sessionUrl: the settings join the URL\'s own options and come last, so they win', async t => {
  t.equal(new URL(sessionUrl('postgresql://u@h:5432/db')).searchParams.get('options'), '-c TimeZone=UTC -c DateStyle=ISO -c default_transaction_isolation=read\\ committed -c idle_in_transaction_session_timeout=30s')
  const mixed = new URL(sessionUrl('postgresql://u:p@h/db?options=-c%20TimeZone%3DEurope%2FBerlin&sslmode=disable', { plan_cache_mode: 'force_generic_plan' }))
  t.equal(mixed.searchParams.get('options'), '-c TimeZone=Europe/Berlin -c plan_cache_mode=force_generic_plan -c TimeZone=UTC -c DateStyle=ISO -c default_transaction_isolation=read\\ committed -c idle_in_transaction_session_timeout=30s')
  t.equal(mixed.searchParams.get('sslmode'), 'disable', 'other parameters kept')
  t.equal(mixed.password, 'p')
  t.equal(sessionUrl('host=/tmp dbname=x'), 'host=/tmp dbname=x', 'a keyword/value string is left as it is')
  // PostgreSQL takes the last -c of a name: a URL that asks for another zone still runs in UTC
  const url = new URL(await createTestDatabase(t))
  url.searchParams.set('options', '-c TimeZone=Europe/Berlin')
  const c = new pg.Client({ connectionString: sessionUrl(url.toString()) })
  await c.connect().then(async () => {
    t.equal((await c.query<{ TimeZone: string }>('SHOW TimeZone')).rows[0].TimeZone, 'UTC')
  }).finally(() => c.end())
})
