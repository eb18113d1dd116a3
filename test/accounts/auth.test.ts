// HTTP Basic auth on every /api/2.0/ route, scrypt hashes, and the account service.
import t from 'tap'
import { addAccount, bootstrapAccount, removeAccount, setPassword } from '../../src/features/accounts/service.ts'
import { hashPassword, verifyPassword } from '../../src/domain/passwords.ts'
import { parseBasic } from '../../src/plugins/auth.ts'
import pg from 'pg'
import { buildTestApp, createUser, eventually } from '../helpers/app.ts'
import { waitingForUs } from '../helpers/locks.ts'
import { enqueueJob, enqueueJobs, newJobId } from '../../src/engine/enqueue.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const basic = (email: string, password: string) => 'Basic ' + Buffer.from(`${email}:${password}`).toString('base64')

t.test('passwords are stored as scrypt hashes and verified', async t => {
  const hash = await hashPassword('s3cret-pass')
  t.match(hash, /^scrypt\$32768\$8\$1\$/)
  t.notMatch(hash, /s3cret/)
  t.ok(await verifyPassword('s3cret-pass', hash))
  t.notOk(await verifyPassword('s3cret-pasS', hash))
  t.not(await hashPassword('s3cret-pass'), hash, 'salted')
})

t.test('requests without or with wrong credentials get 401 in the CloudSigma format', async t => {
  const user = await createUser(app)
  const cases: Array<[string, Record<string, string>]> = [
    ['missing', {}],
    ['wrong password', { authorization: basic(user.email, 'wrong password!') }],
    ['unknown user', { authorization: basic('nobody@example.com', user.password) }],
    ['not basic', { authorization: 'Bearer abc' }],
    ['garbage', { authorization: 'Basic !!!' }]
  ]
  for (const [name, headers] of cases) {
    const res = await app.inject({ method: 'GET', url: '/api/2.0/jobs/', headers })
    t.equal(res.statusCode, 401, name)
    t.equal(res.json()[0].error_type, 'permission', name)
    t.match(res.headers['www-authenticate'], /^Basic/, name)
  }
  const ok = await app.inject({ method: 'GET', url: '/api/2.0/jobs/', headers: { authorization: user.authorization } })
  t.equal(ok.statusCode, 200)
  const upper = await app.inject({ method: 'GET', url: '/api/2.0/jobs/', headers: { authorization: basic(user.email.toUpperCase(), user.password) } })
  t.equal(upper.statusCode, 200, 'emails are case-insensitive')
})

t.test('health probes need no credentials', async t => {
  t.equal((await app.inject('/healthz')).statusCode, 200)
  const ready = await app.inject('/readyz')
  t.equal(ready.statusCode, 200)
  t.same(ready.json(), { status: 'ok', database: 'up' })
})

t.test('account commands: add, duplicate, passwd, remove', async t => {
  const acc = await addAccount(app.prisma, 'Carol@Example.com', 'first password')
  t.equal(acc.email, 'carol@example.com')
  await t.rejects(addAccount(app.prisma, 'carol@example.com', 'other password'), { name: 'AccountError' })
  await t.rejects(addAccount(app.prisma, 'not-an-email', 'long enough'), { name: 'AccountError' })
  await t.rejects(addAccount(app.prisma, 'dave@example.com', 'short'), { name: 'AccountError' })
  await setPassword(app.prisma, 'carol@example.com', 'second password')
  const stored = await app.prisma.account.findUniqueOrThrow({ where: { email: 'carol@example.com' } })
  t.ok(await verifyPassword('second password', stored.passwordHash))
  t.notOk(await verifyPassword('first password', stored.passwordHash))
  await removeAccount(app.prisma, 'carol@example.com')
  t.equal(await app.prisma.account.count({ where: { email: 'carol@example.com' } }), 0)
})

t.test('bootstrap creates an account only when none exists', async t => {
  const { app: fresh } = await buildTestApp(t, { runWorkers: false })
  const first = await bootstrapAccount(fresh.prisma)
  t.ok(first)
  t.equal(await bootstrapAccount(fresh.prisma), undefined, 'second start creates nothing')
  const res = await fresh.inject({ method: 'GET', url: '/api/2.0/jobs/', headers: { authorization: basic(first!.email, first!.password) } })
  t.equal(res.statusCode, 200, 'the printed credentials work')
})

t.test('parseBasic', async t => {
  t.same(parseBasic(basic('a@b.c', 'p:w')), { email: 'a@b.c', password: 'p:w' }, 'colons in passwords survive')
  t.equal(parseBasic(undefined), undefined)
  t.equal(parseBasic('Basic ' + Buffer.from('nocolon').toString('base64')), undefined)
})

t.test('removing an account removes its jobs (trees, log lines, resource links) and nobody else\'s', async t => {
  const erin = await addAccount(app.prisma, 'erin@example.com', 'long enough pass')
  const frank = await addAccount(app.prisma, 'frank@example.com', 'long enough pass')
  const drive = '11111111-2222-4333-8444-555555555555'
  const parent = newJobId()
  await app.prisma.$transaction(tx => enqueueJobs(tx, [
    { id: parent, ownerId: erin.id, operation: 'server_clone' },
    { ownerId: erin.id, operation: 'drive_clone', parentId: parent, resources: [{ type: 'drives', id: drive }] }
  ]))
  const theirs = await app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: frank.id, operation: 'drive_create' }))
  await app.prisma.jobLogLine.create({ data: { jobId: parent, attempt: 1, line: 'started' } })
  t.equal(await app.prisma.job.count({ where: { ownerId: erin.id } }), 2)
  await removeAccount(app.prisma, 'erin@example.com')
  t.equal(await app.prisma.job.count({ where: { ownerId: erin.id } }), 0, 'her jobs are gone')
  t.equal(await app.prisma.jobLogLine.count({ where: { jobId: parent } }), 0, 'with their log lines')
  t.equal(await app.prisma.jobResource.count({ where: { resourceId: drive } }), 0, 'and resource links')
  t.ok(await app.prisma.job.findUnique({ where: { id: theirs.id } }), 'another account\'s job stays')
})

t.test('a job written by a request that held one of the account\'s rows while it was removed goes too', async t => {
  const gina = await addAccount(app.prisma, 'gina@example.com', 'long enough pass')
  const drive = await app.prisma.drive.create({ data: { id: newJobId(), ownerId: gina.id, name: 'd', size: 1n << 20n, media: 'disk', status: 'unmounted', storageType: 'dssd' } })
  const pgc = new pg.Client({ connectionString: databaseUrl })
  await pgc.connect()
  t.teardown(() => pgc.end())
  // the request: locks its drive, then (while the removal waits for that lock) writes its job
  await pgc.query('BEGIN')
  await pgc.query('SELECT id FROM drives WHERE id = $1 FOR UPDATE', [drive.id])
  const removing = removeAccount(app.prisma, 'gina@example.com')
  await eventually(async () => await waitingForUs(pgc) > 0)
  const tx = { $queryRawUnsafe: async (sql: string, ...values: unknown[]) => (await pgc.query(sql, values)).rows } as unknown as Parameters<typeof enqueueJobs>[0]
  const [job] = await enqueueJobs(tx, [{ ownerId: gina.id, operation: 'drive_resize' }])
  await pgc.query('COMMIT')
  await removing
  t.equal(await app.prisma.job.count({ where: { id: job.id } }), 0, 'the job the request committed during the removal is gone with the account')
  t.equal(await app.prisma.drive.count({ where: { id: drive.id } }), 0, 'and the drive')
})
