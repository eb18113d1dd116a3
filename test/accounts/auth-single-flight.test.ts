// Issue 18: a cold credential cache verifies a password hash once however many requests arrive
// with the same credentials at the same time (single flight per credential), counted by
// clonejobs_password_verifications_total on /metrics. Wrong passwords are still refused, each
// request still counts against the guessing limit, and different credentials are not merged.
import t from 'tap'
import { buildTestApp, createUser } from '../helpers/app.ts'

const { app } = await buildTestApp(t, {
  runWorkers: false,
  config: { loginFailuresPerAccount: 25, loginFailuresPerAddress: 1000, loginWindowMs: 60_000, passwordHashConcurrency: 2 }
})
const basic = (email: string, password: string) => 'Basic ' + Buffer.from(`${email}:${password}`).toString('base64')
const get = (authorization: string, remoteAddress = '10.0.0.1') => app.inject({ url: '/api/2.0/drives/', headers: { authorization }, remoteAddress })

async function verifications (): Promise<{ ok: number, failed: number }> {
  const text = (await app.inject('/metrics')).body
  const read = (outcome: string) => Number(new RegExp(`^clonejobs_password_verifications_total\\{outcome="${outcome}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0)
  return { ok: read('ok'), failed: read('failed') }
}

t.test('20 concurrent requests with the same uncached credentials: one verification, 20 answers', async t => {
  const user = await createUser(app)
  const before = await verifications()
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => get(user.authorization, `10.1.0.${i}`)))
  t.same(answers.map(r => r.statusCode), Array(20).fill(200))
  const after = await verifications()
  t.equal(after.ok - before.ok, 1, 'the hash was verified once')
  t.equal(after.failed, before.failed)
  // and then from the cache: no verification at all
  t.equal((await get(user.authorization)).statusCode, 200)
  t.same(await verifications(), after)
})

t.test('20 concurrent wrong guesses: one verification, every request refused and counted as a failed login', async t => {
  const user = await createUser(app)
  const before = await verifications()
  const wrong = basic(user.email, 'not the password')
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => get(wrong, `10.2.0.${i}`)))
  t.same(answers.map(r => r.statusCode), Array(20).fill(401), 'all refused')
  const after = await verifications()
  t.equal(after.failed - before.failed, 1, 'the wrong password was verified once')
  t.equal(after.ok, before.ok)
  // 20 failures counted of the 25 allowed: 5 more guesses, then even the right password is 429
  for (let i = 0; i < 5; i++) t.equal((await get(basic(user.email, `guess ${i}`), `10.2.1.${i}`)).statusCode, 401)
  const limited = await get(user.authorization, '10.2.2.1')
  t.equal(limited.statusCode, 429, 'the 20 shared-verification failures counted against the limit')
  t.equal(limited.json()[0].error_type, 'permission')
})

t.test('different credentials are verified separately, at once', async t => {
  const alice = await createUser(app)
  const bob = await createUser(app)
  const before = await verifications()
  const answers = await Promise.all([
    get(alice.authorization, '10.3.0.1'), get(alice.authorization, '10.3.0.2'),
    get(bob.authorization, '10.3.0.3'), get(bob.authorization, '10.3.0.4'),
    get(basic(alice.email, 'wrong one'), '10.3.0.5'), get(basic(alice.email, 'wrong two'), '10.3.0.6')
  ])
  t.same(answers.map(r => r.statusCode), [200, 200, 200, 200, 401, 401])
  const after = await verifications()
  t.equal(after.ok - before.ok, 2, 'one per right credential')
  t.equal(after.failed - before.failed, 2, 'one per distinct wrong password: guesses are never merged')
})
