// Failed logins are limited per account and per client address (429, CloudSigma array,
// Retry-After); successful ones are not; one account's guesses do not starve another account's
// login; a password change or removal takes effect at once in its app and within a second elsewhere.
import pg from 'pg'
import t from 'tap'
import { buildTestApp, createUser, eventually } from '../helpers/app.ts'
import { hashPassword } from '../../src/domain/passwords.ts'
import { removeAccount, setPassword } from '../../src/features/accounts/service.ts'

const { app, databaseUrl } = await buildTestApp(t, {
  runWorkers: false,
  config: { loginFailuresPerAccount: 3, loginFailuresPerAddress: 8, loginWindowMs: 60_000, passwordHashConcurrency: 1 }
})
const basic = (email: string, password: string) => 'Basic ' + Buffer.from(`${email}:${password}`).toString('base64')
const get = (authorization: string, remoteAddress = '10.0.0.1') => app.inject({ url: '/api/2.0/drives/', headers: { authorization }, remoteAddress })

t.test('failed logins per account: 429 after the limit, even with the right password', async t => {
  const user = await createUser(app)
  for (let i = 0; i < 3; i++) t.equal((await get(basic(user.email, 'wrong' + i), `10.1.0.${i}`)).statusCode, 401, `guess ${i}`)
  const limited = await get(basic(user.email, 'wrong again'), '10.1.1.1')
  t.equal(limited.statusCode, 429)
  t.equal(limited.json()[0].error_type, 'permission')
  t.ok(Number(limited.headers['retry-after']) >= 1, 'Retry-After')
  t.equal((await get(basic(user.email, user.password), '10.1.1.2')).statusCode, 429, 'no more verifying for this account in the window')
})

t.test('successful logins are never limited; a verified credential keeps working', async t => {
  const user = await createUser(app)
  for (let i = 0; i < 30; i++) t.equal((await get(user.authorization, '10.2.0.1')).statusCode, 200)
})

t.test('failed logins per client address', async t => {
  for (let i = 0; i < 8; i++) t.equal((await get(basic(`nobody${i}@example.com`, 'x'), '10.3.0.1')).statusCode, 401)
  const limited = await get(basic('nobody-else@example.com', 'x'), '10.3.0.1')
  t.equal(limited.statusCode, 429, 'this address is limited')
  t.ok(limited.headers['retry-after'])
  const user = await createUser(app)
  t.equal((await get(user.authorization, '10.3.0.2')).statusCode, 200, 'another address is not')
})

t.test('guesses at one account do not starve another account', async t => {
  const victim = await createUser(app)
  const other = await createUser(app)
  const done: string[] = []
  const guesses = Array.from({ length: 8 }, (_, i) => get(basic(victim.email, 'guess' + i), `10.4.0.${i}`).then(r => { done.push('guess'); return r }))
  await new Promise(resolve => setImmediate(resolve))
  const login = get(other.authorization, '10.4.1.1').then(r => { done.push('login'); return r })
  const [res] = await Promise.all([login, ...guesses])
  t.equal(res.statusCode, 200)
  t.ok(done.indexOf('login') <= 3, `the other account logged in after ${done.indexOf('login')} guesses, not after all ${guesses.length}`)
})

t.test('a new password and a removal take effect at once in the app that made them', async t => {
  const user = await createUser(app)
  t.equal((await get(user.authorization, '10.5.0.1')).statusCode, 200)
  await setPassword(app.prisma, user.email, 'a brand new password', app.accountChanges)
  t.equal((await get(user.authorization, '10.5.0.2')).statusCode, 401, 'the old password no longer works')
  t.equal((await get(basic(user.email, 'a brand new password'), '10.5.0.3')).statusCode, 200)
  await removeAccount(app.prisma, user.email, app.accountChanges)
  const gone = await get(basic(user.email, 'a brand new password'), '10.5.0.4')
  t.equal(gone.statusCode, 401, 'a removed account is 401, not 500')
  const write = await app.inject({ method: 'POST', url: '/api/2.0/drives/', headers: { authorization: basic(user.email, 'a brand new password'), 'content-type': 'application/json' }, payload: JSON.stringify({ name: 'x', size: 1048576, media: 'disk' }), remoteAddress: '10.5.0.5' })
  t.equal(write.statusCode, 401, 'and so are its writes')
})

t.test('another process changing the password: the cache here forgets it within a second', async t => {
  const user = await createUser(app)
  t.equal((await get(user.authorization, '10.6.0.1')).statusCode, 200)
  // what the CLI in another process does: a new hash, then NOTIFY (no in-process event here)
  const other = new pg.Client({ connectionString: databaseUrl })
  await other.connect()
  t.teardown(() => other.end())
  await other.query('UPDATE accounts SET password_hash = $1 WHERE id = $2', [await hashPassword('changed elsewhere'), user.id])
  const changedAt = Date.now()
  await other.query('SELECT pg_notify($1, $2)', ['clonejobs_accounts', user.id])
  await eventually(async () => (await get(user.authorization, '10.6.0.2')).statusCode === 401, { timeoutMs: 1000, intervalMs: 20 })
  t.ok(Date.now() - changedAt < 1000, 'the old password stopped working within a second')
  t.equal((await get(basic(user.email, 'changed elsewhere'), '10.6.0.3')).statusCode, 200)
})
