// Two apps built in one process share nothing: ?do= actions and job handlers registered on one
// are unknown to the other (no module-level registries), and each app has its own engine.
import t from 'tap'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { MINIMAL } from '../servers/helpers.ts'

const one = await buildTestApp(t, { runWorkers: false })
const two = await buildTestApp(t, { runWorkers: false, databaseUrl: one.databaseUrl })

t.test('each app has its own registries and engine', async t => {
  t.not(one.app.actions, two.app.actions)
  t.not(one.app.actions.drive, two.app.actions.drive)
  t.not(one.app.jobs, two.app.jobs)
  // both got the features' own actions and handlers, each its own copy
  t.ok(one.app.actions.drive.get('clone'))
  t.ok(two.app.actions.drive.get('clone'))
  t.not(one.app.actions.drive.get('resize'), undefined)
  t.ok(one.app.jobs.handler('drive_clone'))
  t.not(one.app.jobs.handler('drive_clone'), two.app.jobs.handler('drive_clone'), 'handlers are made per app')
})

t.test('an action registered on one app does not leak to the other', async t => {
  one.app.actions.server.register('isolation_echo', { summary: 'test', run: async ({ uuid }) => ({ uuid }) })
  t.ok(one.app.actions.server.get('isolation_echo'))
  t.equal(two.app.actions.server.get('isolation_echo'), undefined)
  // registering the same name on the other app is not a clash either
  t.doesNotThrow(() => two.app.actions.server.register('isolation_echo', { summary: 'test', run: async () => ({ two: true }) }))

  const user = await createUser(one.app)
  const server = (await client(one.app, user).post('/api/2.0/servers/', MINIMAL)).json().objects[0]
  const viaOne = await client(one.app, user).post(`/api/2.0/servers/${server.uuid}/action/?do=isolation_echo`, {})
  t.equal(viaOne.statusCode, 202)
  t.same(viaOne.json(), { uuid: server.uuid })
  const viaTwo = await client(two.app, user).post(`/api/2.0/servers/${server.uuid}/action/?do=isolation_echo`, {})
  t.same(viaTwo.json(), { two: true })
})

t.test('a job handler registered on one engine is unknown to the other', async t => {
  one.app.jobs.register('isolation_test', { run: async () => ({}) })
  t.ok(one.app.jobs.handler('isolation_test'))
  t.equal(two.app.jobs.handler('isolation_test'), undefined)
})
