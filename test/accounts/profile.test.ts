// The profile: clone_naming defaults to NONE and can be set per account.
import t from 'tap'
import { buildTestApp, client, createUser } from '../helpers/app.ts'

const { app } = await buildTestApp(t, { runWorkers: false })
const alice = client(app, await createUser(app))
const bob = client(app, await createUser(app))

t.test('clone_naming defaults to NONE and is per account', async t => {
  const p = (await alice.get('/api/2.0/profile/')).json()
  t.equal(p.clone_naming, 'NONE')
  t.equal(p.resource_uri, '/api/2.0/profile/')
  const put = await alice.put('/api/2.0/profile/', { clone_naming: 'COUNTER', email: 'ignored@example.com' })
  t.equal(put.statusCode, 200)
  t.equal(put.json().clone_naming, 'COUNTER')
  t.not(put.json().email, 'ignored@example.com', 'read-only fields are ignored')
  t.equal((await alice.get('/api/2.0/profile/')).json().clone_naming, 'COUNTER')
  t.equal((await bob.get('/api/2.0/profile/')).json().clone_naming, 'NONE', 'another account is unchanged')
})

t.test('unknown strategies are refused', async t => {
  const res = await alice.put('/api/2.0/profile/', { clone_naming: 'RANDOM' })
  t.equal(res.statusCode, 400)
  t.equal(res.json()[0].error_point, 'clone_naming')
})
