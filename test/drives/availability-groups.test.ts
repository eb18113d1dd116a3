// GET /drives/availability_groups/[{uuid}/] (spec §2.3, §2.11): the caller's drives grouped by the
// storage host they share. Local files: one host, one group; Ceph ('spread'): each drive alone.
// The static path is its own route, not a drive called "availability_groups".
import t, { type Test } from 'tap'
import { randomUUID } from 'node:crypto'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { seedDrive } from '../servers/helpers.ts'
import { StorageError } from '../../src/storage/index.ts'

const { app } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const bob = await createUser(app)
const carol = await createUser(app)
const api = client(app, alice)
const bobApi = client(app, bob)
const BASE = '/api/2.0/drives/availability_groups/'

const mine = [await seedDrive(app, alice.id), await seedDrive(app, alice.id, { media: 'cdrom' }), await seedDrive(app, alice.id, { status: 'creating' })].sort()
const bobs = [await seedDrive(app, bob.id)]

/**
 * Sets the storage's placement for one test: these tests run on either backend (npm test: local
 * files, test:rbd: Ceph); each backend's own placement is checked by its storage tests.
 */
function placeAs (t: Test, placement: 'one-host' | 'spread'): void {
  const storage = app.storage as { placement: () => Promise<string> }
  const before = storage.placement
  storage.placement = async () => placement
  t.teardown(() => { storage.placement = before })
}

t.test('local storage: every drive of the caller shares the one host, in one group; no one else\'s', async t => {
  placeAs(t, 'one-host')
  for (const url of [BASE, BASE.slice(0, -1)]) {
    const res = await api.get(url)
    t.equal(res.statusCode, 200, `${url}: ${res.body}`)
    t.match(res.headers['content-type'], /^application\/json/)
    t.same(res.json(), [mine], `${url}: one group, the caller's drives in uuid order`)
  }
  t.same((await bobApi.get(BASE)).json(), [bobs], 'bob sees only his')
  t.same((await client(app, carol).get(BASE)).json(), [], 'an account without drives: no groups')
})

t.test('one drive: the drives on its host, itself included', async t => {
  placeAs(t, 'one-host')
  for (const id of mine) {
    for (const url of [`${BASE}${id}/`, `${BASE}${id}`, `${BASE}${id.toUpperCase()}/`]) {
      const res = await api.get(url)
      t.equal(res.statusCode, 200, url)
      t.same(res.json(), mine, url)
    }
  }
})

t.test("an unknown or another account's drive is 404 notexist; a malformed uuid 400", async t => {
  for (const id of [bobs[0], randomUUID()]) {
    const res = await api.get(`${BASE}${id}/`)
    t.equal(res.statusCode, 404, id)
    t.same(res.json(), [{ error_type: 'notexist', error_message: res.json()[0].error_message, error_point: 'uuid' }])
  }
  const bad = await api.get(`${BASE}not-a-uuid/`)
  t.equal(bad.statusCode, 400)
  t.equal(bad.json()[0].error_point, 'uuid')
  t.equal((await app.inject({ method: 'GET', url: BASE })).statusCode, 401, 'credentials are needed')
})

t.test('deleted drives leave the groups at once', async t => {
  placeAs(t, 'one-host')
  const extra = await seedDrive(app, alice.id)
  t.ok((await api.get(BASE)).json()[0].includes(extra))
  await app.prisma.drive.update({ where: { id: extra }, data: { deleted: true } })
  t.notOk((await api.get(BASE)).json().flat().includes(extra))
  t.equal((await api.get(`${BASE}${extra}/`)).statusCode, 404)
})

t.test('Ceph (spread): no host holds a drive alone, so each drive is a group of its own', async t => {
  placeAs(t, 'spread')
  t.same((await api.get(BASE)).json(), mine.map(id => [id]))
  t.same((await api.get(`${BASE}${mine[1]}/`)).json(), [mine[1]])
  t.equal((await api.get(`${BASE}${bobs[0]}/`)).statusCode, 404)
})

t.test('the static path is not a drive: other methods are 405, and /drives/{uuid}/ still works', async t => {
  for (const method of ['PUT', 'DELETE', 'POST'] as const) {
    const res = await api.raw(method, BASE, {})
    t.equal(res.statusCode, 405, `${method} ${BASE}`)
    t.equal(res.headers.allow, 'GET, HEAD')
  }
  const one = await api.raw('DELETE', `${BASE}${mine[0]}/`)
  t.equal(one.statusCode, 405, 'DELETE on one drive\'s group')
  t.equal((await api.get(`/api/2.0/drives/${mine[0]}/`)).json().uuid, mine[0])
  t.equal((await app.prisma.drive.count({ where: { id: { in: mine }, deleted: false } })), 3, 'nothing was deleted')
})

t.test('a storage that cannot tell where images sit (Ceph not answering) is 503, not a guess', async t => {
  const storage = app.storage as { placement: () => Promise<string> }
  const before = storage.placement
  storage.placement = async () => { throw new StorageError('UNAVAILABLE', 'size of pool rbd: no answer from the cluster within 30 s') }
  t.teardown(() => { storage.placement = before })
  for (const url of [BASE, `${BASE}${mine[0]}/`]) {
    const res = await api.get(url)
    t.equal(res.statusCode, 503, url)
    t.equal(res.json()[0].error_type, 'backend', url)
  }
})
