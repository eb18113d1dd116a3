// A Prisma transaction whose COMMIT fails gives its connection back (src/db/client.ts). Prisma's
// transaction manager releases the connection only after COMMIT succeeded; when COMMIT failed (a
// serialization failure or a deferred constraint, a lost connection, the query timeout on a
// stalled server) the connection stayed checked out for good, and after as many failures as the
// pool has connections the service answered 503 to everything until it was restarted.
// A deferred constraint trigger on `servers` stands in for the failure: creating a server is a
// Prisma interactive transaction.
import t, { type Test } from 'tap'
import pg from 'pg'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { createTestDatabase } from '../helpers/db.ts'

const POOL = 3

async function setUp (t: Test, trigger: string, config: { dbQueryTimeoutMs?: number } = {}) {
  const databaseUrl = await createTestDatabase(t)
  const admin = new pg.Client({ connectionString: databaseUrl })
  await admin.connect()
  t.teardown(() => admin.end())
  await admin.query(`CREATE FUNCTION at_commit () RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN ${trigger} RETURN NULL; END $$`)
  await admin.query('CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON servers DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION at_commit()')
  const { app } = await buildTestApp(t, { databaseUrl, config: { dbPoolMax: POOL, dbPoolWaitMs: 2000, ...config } })
  const api = client(app, await createUser(app))
  const create = (name: string) => api.post('/api/2.0/servers/', { name, cpu: 1000, mem: 1024 ** 3, vnc_password: 'secret' })
  const checkedOut = () => app.dbPool.totalCount - app.dbPool.idleCount
  return { app, admin, create, checkedOut }
}

t.test('COMMIT refused (a serialization failure at commit): 503 concurrency, the connection goes back, the pool keeps serving', async t => {
  const { admin, create, checkedOut } = await setUp(t, "IF NEW.name = 'refused' THEN RAISE EXCEPTION 'refused at commit' USING ERRCODE = '40001'; END IF;")
  // twice as many failed commits as the pool has connections
  for (let i = 0; i < 2 * POOL; i++) {
    const res = await create('refused')
    t.equal(res.statusCode, 503, `failed commit ${i + 1} answered 503 (${res.body.slice(0, 120)})`)
    t.match(res.json(), [{ error_type: 'concurrency' }], 'concurrency: a retry is the cure')
    t.equal(res.headers['retry-after'], '1')
  }
  t.equal(checkedOut(), 0, 'no connection is left checked out')
  const made = await create('accepted')
  t.equal(made.statusCode, 201, `a server is made after them (${made.body.slice(0, 120)})`)
  const names = (await admin.query<{ name: string }>('SELECT name FROM servers ORDER BY name')).rows.map(r => r.name)
  t.same(names, ['accepted'], 'no refused server was kept')
  t.equal(checkedOut(), 0)
})

t.test('COMMIT stalled past the query timeout: the connection is discarded, not handed to the next request still busy', async t => {
  // the server's COMMIT of a 'stalled' server takes 2.5 s; the client gives up after 1 s
  const { create, checkedOut } = await setUp(t, "IF NEW.name = 'stalled' THEN PERFORM pg_sleep(2.5); END IF;", { dbQueryTimeoutMs: 1000 })
  for (let i = 0; i < POOL + 1; i++) {
    const res = await create('stalled')
    t.ok(res.statusCode >= 400, `stalled commit ${i + 1} answered ${res.statusCode}`)
  }
  t.equal(checkedOut(), 0, 'no connection is left checked out')
  // at once, while the stalled COMMITs still run on the server: a connection that came back busy
  // would make this request's statements wait behind one of them past the timeout
  const made = await create('prompt')
  t.equal(made.statusCode, 201, `a server is made at once (${made.body.slice(0, 120)})`)
  t.equal(checkedOut(), 0)
})

t.test('a deadlock in a pg transaction (creating a drive): 503 concurrency with Retry-After, no drive, no connection kept', async t => {
  const { app, admin, checkedOut } = await setUp(t, 'NULL;')
  await admin.query("CREATE FUNCTION lose () RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.name = 'loser' THEN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END IF; RETURN NULL; END $$")
  await admin.query('CREATE CONSTRAINT TRIGGER lose AFTER INSERT ON drives DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION lose()')
  const api = client(app, await createUser(app))
  for (let i = 0; i < 2 * POOL; i++) {
    const res = await api.post('/api/2.0/drives/', { name: 'loser', size: 1024 ** 3, media: 'disk' })
    t.equal(res.statusCode, 503, `attempt ${i + 1} answered 503 (${res.body.slice(0, 120)})`)
    t.match(res.json(), [{ error_type: 'concurrency', error_message: /conflicted/ }])
  }
  t.equal(checkedOut(), 0, 'no connection is left checked out')
  t.equal((await admin.query('SELECT 1 FROM drives')).rowCount, 0, 'no drive was made')
  const made = await api.post('/api/2.0/drives/', { name: 'winner', size: 1024 ** 3, media: 'disk' })
  t.equal(made.statusCode, 201, 'the next drive is made')
})
