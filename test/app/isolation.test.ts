// Two apps built in one process share nothing: ?do= actions and job handlers registered on one
// are unknown to the other (no module-level registries), each app has its own engine, its own
// account-change announcements (credential cache) and its own set of chunks being received (a
// chunk one app receives is still refused by the other: through the database's claim, not a shared map).
import { randomBytes } from 'node:crypto'
import { PassThrough, Readable } from 'node:stream'
import t from 'tap'
import { setPassword } from '../../src/features/accounts/service.ts'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { MINIMAL } from '../servers/helpers.ts'

const one = await buildTestApp(t, { runWorkers: false })
// two apps of one deployment: the same database and the same drive images
const two = await buildTestApp(t, { runWorkers: false, databaseUrl: one.databaseUrl, config: { drivesDir: one.config.drivesDir } })

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

/** clonejobs_password_verifications_total of one app, by outcome. */
async function verifications (app: typeof one.app): Promise<{ ok: number, failed: number }> {
  const text = (await app.inject('/metrics')).body
  const read = (outcome: string) => Number(new RegExp(`^clonejobs_password_verifications_total\\{outcome="${outcome}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0)
  return { ok: read('ok'), failed: read('failed') }
}

t.test("an account change announced in one app empties that app's credential cache, not another app's", async t => {
  // a third app on a database of its own (NOTIFY does not cross databases), holding an account
  // with the same id and credentials as one in app one: only the in-process announcement could reach it
  const three = await buildTestApp(t, { runWorkers: false })
  const user = await createUser(one.app)
  await three.app.prisma.account.create({ data: { id: user.id, email: user.email, passwordHash: (await one.app.prisma.account.findUniqueOrThrow({ where: { id: user.id } })).passwordHash } })
  const get = (app: typeof one.app) => app.inject({ url: '/api/2.0/drives/', headers: { authorization: user.authorization } })
  t.not(one.app.accountChanges, three.app.accountChanges)
  t.equal((await get(one.app)).statusCode, 200)
  t.equal((await get(three.app)).statusCode, 200)
  const before = await verifications(three.app)
  t.equal((await get(three.app)).statusCode, 200)
  t.same(await verifications(three.app), before, 'app three answers from its cache')

  await setPassword(one.app.prisma, user.email, 'changed in app one', one.app.accountChanges)
  t.equal((await get(one.app)).statusCode, 401, 'app one forgot the old password at once')
  t.equal((await get(three.app)).statusCode, 200, 'app three still holds its own account')
  t.same(await verifications(three.app), before, "app three's cache was not touched by app one's announcement")
})

t.test('a chunk being received by one app is refused by another through the database claim, not a shared map', async t => {
  const user = await createUser(one.app)
  const api = client(one.app, user)
  // 4 MiB chunks, half of one sent first: a write stream gathers pieces into 1 MiB writes, so the
  // first half reaches the image while the rest is awaited
  const S = 4 * 1024 * 1024
  const drive = (await api.post('/api/2.0/initupload/', { name: 'inflight', size: 2 * S, media: 'disk' })).json().objects[0]
  const link = (await api.post(`/api/2.0/drives/${drive.uuid}/action/?do=upload_chunk`, { chunk_number: 0, chunk_size: S })).json().link as string
  const chunk = randomBytes(S)
  const send = (app: typeof one.app, payload: Readable | Buffer) => app.inject({ method: 'POST', url: link, headers: { 'content-type': 'application/octet-stream', 'content-length': String(S) }, payload })

  // app one starts receiving chunk 0 and waits for the rest of its body
  const slow = new PassThrough()
  slow.write(chunk.subarray(0, S / 2))
  const first = send(one.app, slow)
  // its first bytes reach the image: the chunk is in flight in app one
  await eventually(async () => (await one.app.storage.stat(drive.uuid)).allocated > 0)
  const duplicate = await send(one.app, Readable.from([]))
  t.equal(duplicate.statusCode, 416, 'app one refuses a duplicate of the chunk it is receiving')
  t.match(duplicate.json()[0].error_message, /being received now/)
  const inTwo = await send(two.app, randomBytes(S))
  t.equal(inTwo.statusCode, 416, `app two refuses the chunk app one is receiving (two processes): ${inTwo.body}`)
  t.match(inTwo.json()[0].error_message, /being received now/)
  slow.end(chunk.subarray(S / 2))
  const done = await first
  t.equal(done.statusCode, 200, done.body)
  t.match(done.json(), { chunk: 0, chunks_stored: 1 })
  t.equal(await one.app.prisma.uploadChunk.count({ where: { driveId: drive.uuid } }), 1)
  const again = await send(two.app, chunk)
  t.equal(again.statusCode, 416, 'then app two finds it stored')
  t.match(again.json()[0].error_message, /^Chunk 0 already uploaded$/)
})
