// Issue 15: bulk PUT /drives/ (each object names its drive by uuid; all or none, 200 with the
// updated list) and the Location header on 201 creates of one drive or server.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { BULK_MAX_OBJECTS } from '../../src/http/schemas.ts'
import { GiB, readyDrive } from './helpers.ts'

const { app } = await buildTestApp(t, { config: { driveMaxSize: 100 * GiB } })
const alice = await createUser(app)
const bob = await createUser(app)
const api = client(app, alice)

t.test('PUT /drives/ updates every listed drive and answers the updated list in order', async t => {
  const a = await readyDrive(api, { name: 'a' })
  const b = await readyDrive(api, { name: 'b', meta: { k: 'v' } })
  const res = await api.put('/api/2.0/drives/', {
    objects: [
      { uuid: b.uuid, name: 'b2', meta: { x: '1' }, status: 'mounted', owner: a.owner },
      { resource_uri: a.resource_uri, name: 'a2', allow_multimount: true }
    ]
  })
  t.equal(res.statusCode, 200, res.body)
  const objects = res.json().objects
  t.same(objects.map((o: any) => [o.uuid, o.name]), [[b.uuid, 'b2'], [a.uuid, 'a2']])
  t.same(objects[0].meta, { x: '1' })
  t.equal(objects[1].allow_multimount, true)
  t.equal((await api.get(`/api/2.0/drives/${a.uuid}/`)).json().name, 'a2', 'stored')
  const bare = await api.put('/api/2.0/drives/', [{ uuid: a.uuid, name: 'a3' }])
  t.equal(bare.statusCode, 200, 'a bare array is accepted too')
  t.equal(bare.json().objects[0].name, 'a3')
  const schema = (await api.get('/api/2.0/drives/schema/')).json()
  t.ok(schema.allowed_list_http_methods.includes('put'))
})

t.test('PUT /drives/ is all or none: one bad object changes nothing', async t => {
  const a = await readyDrive(api, { name: 'keep-a' })
  const b = await readyDrive(api, { name: 'keep-b' })
  const missing = await api.put('/api/2.0/drives/', { objects: [{ uuid: a.uuid, name: 'changed' }, { uuid: randomUUID(), name: 'x' }] })
  t.equal(missing.statusCode, 404, 'an unknown uuid')
  const bobs = await client(app, bob).put('/api/2.0/drives/', { objects: [{ uuid: a.uuid, name: 'stolen' }] })
  t.equal(bobs.statusCode, 404, "another account's drive is unknown")
  const badType = await api.put('/api/2.0/drives/', { objects: [{ uuid: a.uuid, name: 'changed' }, { uuid: b.uuid, storage_type: 'magnetic' }] })
  t.equal(badType.statusCode, 400, 'storage_type cannot change')
  t.equal(badType.json()[0].error_point, 'storage_type')
  t.match(badType.json()[0].error_message, new RegExp(`^Drive ${b.uuid}: storage_type cannot be changed`), 'the message names the drive it is about')
  const tooBig = await api.put('/api/2.0/drives/', { objects: [{ uuid: a.uuid, name: 'changed' }, { uuid: b.uuid, size: 1000 * GiB }] })
  t.equal(tooBig.statusCode, 400, 'a size over the limit')
  t.match(tooBig.json()[0].error_message, new RegExp(`^Drive ${b.uuid}: `), 'checked before the transaction, and named too')
  const noUuid = await api.put('/api/2.0/drives/', { objects: [{ name: 'nameless' }] })
  t.equal(noUuid.statusCode, 400)
  t.equal(noUuid.json()[0].error_point, 'uuid')
  const twice = await api.put('/api/2.0/drives/', { objects: [{ uuid: a.uuid, name: 'x' }, { uuid: a.uuid, name: 'y' }] })
  t.equal(twice.statusCode, 400, 'a drive listed twice')
  for (const [d, name] of [[a, 'keep-a'], [b, 'keep-b']] as const) {
    t.equal((await api.get(`/api/2.0/drives/${d.uuid}/`)).json().name, name, 'unchanged')
  }
})

t.test('a bulk PUT with a new size starts resizes like PUT /drives/{uuid}/', async t => {
  const a = await readyDrive(api, { name: 'grow' })
  const res = await api.put('/api/2.0/drives/', { objects: [{ uuid: a.uuid, size: 2 * GiB }] })
  t.equal(res.statusCode, 200, res.body)
  t.equal(res.json().objects[0].status, 'resizing')
  t.equal(await app.prisma.job.count({ where: { operation: 'drive_resize', links: { some: { resourceId: a.uuid } } } }), 1)
})

t.test('Location on a 201 create of one object; none for several', async t => {
  const one = await api.post('/api/2.0/drives/', { name: 'loc', size: GiB, media: 'disk' })
  t.equal(one.statusCode, 201)
  t.equal(one.headers.location, one.json().objects[0].resource_uri)
  const two = await api.post('/api/2.0/drives/', [{ name: 'l1', size: GiB, media: 'disk' }, { name: 'l2', size: GiB, media: 'disk' }])
  t.equal(two.statusCode, 201)
  t.notOk(two.headers.location, 'a bulk create has no single Location')
  const server = await api.post('/api/2.0/servers/', { name: 's', cpu: 1000, mem: 536870912, vnc_password: 'secret' })
  t.equal(server.statusCode, 201)
  t.equal(server.headers.location, server.json().objects[0].resource_uri)
  t.match(server.headers.location, /^\/api\/2\.0\/servers\/[0-9a-f-]{36}\/$/)
})

t.test('concurrent bulk PUTs listing the same drives in opposite orders do not deadlock', async t => {
  const drives = []
  for (let i = 0; i < 6; i++) drives.push(await readyDrive(api, { name: `order-${i}` }))
  const forward = drives.map(d => d.uuid)
  const backward = [...forward].reverse()
  const statuses: number[] = []
  for (let round = 0; round < 15; round++) {
    const [one, two] = await Promise.all([
      api.put('/api/2.0/drives/', { objects: forward.map((uuid, i) => ({ uuid, name: `f${round}-${i}` })) }),
      api.put('/api/2.0/drives/', { objects: backward.map((uuid, i) => ({ uuid, name: `b${round}-${i}` })) })
    ])
    statuses.push(one.statusCode, two.statusCode)
    if (one.statusCode === 200) t.same(one.json().objects.map((o: any) => o.uuid), forward, 'answered in request order')
    if (two.statusCode === 200) t.same(two.json().objects.map((o: any) => o.uuid), backward, 'answered in request order')
  }
  t.same(statuses.filter(s => s !== 200), [], 'every request succeeded')
})

t.test('more than BULK_MAX_OBJECTS drives in one bulk update or delete: 400 at objects at once', async t => {
  // written one by one in one transaction, so many outlasted its time limit: a 503 after a minute that no retry got past
  const many = Array.from({ length: BULK_MAX_OBJECTS + 1 }, () => randomUUID())
  const updated = await api.put('/api/2.0/drives/', many.map(uuid => ({ uuid, name: 'x' })))
  const deleted = await api.delete('/api/2.0/drives/', many)
  for (const [what, res] of [['update', updated], ['delete', deleted]] as const) {
    t.equal(res.statusCode, 400, `${what}: ${res.body.slice(0, 200)}`)
    t.match(res.json(), [{ error_type: 'validation', error_point: 'objects', error_message: new RegExp(`${BULK_MAX_OBJECTS}`) }], what)
  }
})
