// Bulk PUT /servers/ and DELETE /servers/ (the list methods of §1.11; the servers' counterpart of
// PUT and DELETE /drives/): each object as its single route would, in one transaction, all or
// none; bodies {"objects": [...]}, a bare array or one object; items a uuid, a URI or an object.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { BULK_MAX_OBJECTS } from '../../src/http/schemas.ts'
import { MINIMAL, driveStatus, seedDrive } from './helpers.ts'

const { app } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const bob = await createUser(app)
const api = client(app, alice)
const bobApi = client(app, bob)
const URL = '/api/2.0/servers/'

const mount = (drive: string, devChannel = '0:0', device = 'virtio') => ({ device, dev_channel: devChannel, drive })

async function create (body: Record<string, unknown> = {}, as = api): Promise<any> {
  const res = await as.post(URL, { ...MINIMAL, ...body })
  if (res.statusCode !== 201) throw new Error(`${res.statusCode} ${res.body}`)
  return res.json().objects[0]
}

const get = async (id: string, as = api) => (await as.get(`${URL}${id}/`)).json()
const exists = async (id: string) => (await app.prisma.server.count({ where: { id } })) === 1

t.test('PUT /servers/ updates every listed server and answers them in request order', async t => {
  const a = await create({ name: 'a' })
  const b = await create({ name: 'b', meta: { k: 'v' } })
  const res = await api.put(URL, {
    objects: [
      { uuid: b.uuid, name: 'b2', cpu: 2000, meta: { x: '1' }, status: 'running', owner: a.owner },
      { resource_uri: a.resource_uri, name: 'a2', smp: 2 }
    ]
  })
  t.equal(res.statusCode, 200, res.body)
  const objects = res.json().objects
  t.same(objects.map((o: any) => [o.uuid, o.name]), [[b.uuid, 'b2'], [a.uuid, 'a2']])
  t.match(objects[0], { cpu: 2000, meta: { x: '1' }, status: 'stopped', mem: MINIMAL.mem })
  t.equal(objects[1].smp, 2)
  t.match(await get(a.uuid), { name: 'a2', smp: 2 }, 'stored')
  const bare = await api.put(URL, [{ uuid: a.uuid, name: 'a3' }])
  t.equal(bare.statusCode, 200, 'a bare array')
  t.equal(bare.json().objects[0].name, 'a3')
  const single = await api.put(URL.slice(0, -1), { uuid: a.uuid, name: 'a4' })
  t.equal(single.statusCode, 200, 'one object with its uuid, path without the slash')
  t.equal(single.json().objects[0].name, 'a4')
  const schema = (await api.get(`${URL}schema/`)).json()
  t.same(schema.allowed_list_http_methods, ['get', 'put', 'delete', 'post'], 'the schema says so (§1.11)')
})

t.test('PUT /servers/ moves a disk between servers in one request, in order', async t => {
  const disk = await seedDrive(app, alice.id)
  const a = await create({ drives: [mount(disk)] })
  const b = await create()
  const res = await api.put(URL, [{ uuid: a.uuid, drives: [] }, { uuid: b.uuid, drives: [mount(disk)] }])
  t.equal(res.statusCode, 200, res.body)
  t.same((await get(a.uuid)).drives, [])
  t.same((await get(b.uuid)).drives.map((d: any) => d.drive.uuid), [disk])
  t.equal(await driveStatus(app, disk), 'mounted')
})

t.test('a running server takes only name, meta and tags, as PUT /servers/{uuid}/', async t => {
  const s = await create({ name: 'live' })
  await app.prisma.server.update({ where: { id: s.uuid }, data: { status: 'running', activeSince: new Date() } })
  const res = await api.put(URL, [{ uuid: s.uuid, name: 'renamed', cpu: 3000 }])
  t.equal(res.statusCode, 200)
  t.match(res.json().objects[0], { name: 'renamed', cpu: MINIMAL.cpu })
})

t.test('PUT /servers/ is all or none: one bad object changes nothing', async t => {
  const a = await create({ name: 'keep-a' })
  const b = await create({ name: 'keep-b' })
  const theirs = await create({ name: 'bobs' }, bobApi)
  const disk = await seedDrive(app, alice.id)
  const bobsDisk = await seedDrive(app, bob.id)
  const cases: Array<[string, unknown, number, string | null]> = [
    ['an unknown server', { objects: [{ uuid: a.uuid, name: 'x' }, { uuid: randomUUID(), name: 'x' }] }, 404, 'uuid'],
    ["another account's server", [{ uuid: a.uuid, name: 'x' }, { uuid: theirs.uuid, name: 'mine' }], 404, 'uuid'],
    ['an object without uuid', [{ uuid: a.uuid, name: 'x' }, { name: 'nameless' }], 400, 'uuid'],
    ['a uuid of another resource', [{ resource_uri: `/api/2.0/drives/${a.uuid}/`, name: 'x' }], 400, 'uuid'],
    ['a malformed uuid', [{ uuid: 'nope', name: 'x' }], 400, 'uuid'],
    ['a server listed twice', [{ uuid: a.uuid, name: 'x' }, { uuid: a.uuid.toUpperCase(), name: 'y' }], 400, 'uuid'],
    ['a limit', [{ uuid: a.uuid, name: 'x' }, { uuid: b.uuid, mem: 1 }], 400, 'mem'],
    ['a bad mount after a good one', [{ uuid: a.uuid, name: 'x', drives: [mount(disk)] }, { uuid: b.uuid, drives: [mount(disk, '9:9', 'ide')] }], 400, 'drives'],
    ["another account's drive", [{ uuid: a.uuid, name: 'x' }, { uuid: b.uuid, drives: [mount(bobsDisk)] }], 400, 'drives'],
    ['a disk two servers want', [{ uuid: a.uuid, name: 'x', drives: [mount(disk)] }, { uuid: b.uuid, drives: [mount(disk)] }], 400, 'drives'],
    ['an empty list', { objects: [] }, 400, null],
    ['no body', undefined, 400, null],
    ['a string', '"x"', 400, null],
    ['items of the wrong type', [42], 400, null]
  ]
  for (const [what, body, status, point] of cases) {
    const res = await api.raw('PUT', URL, body)
    t.equal(res.statusCode, status, `${what}: ${res.body}`)
    const err = res.json()[0]
    t.ok(Array.isArray(res.json()) && typeof err.error_message === 'string', `${what}: CloudSigma error array`)
    if (point !== null) t.equal(err.error_point, point, `${what}: error_point`)
  }
  const items = await api.raw('PUT', URL, [{ uuid: a.uuid, name: 'x' }, { uuid: b.uuid, mem: 1 }])
  t.match(items.json()[0].error_message, /mem/)
  const mountErr = await api.raw('PUT', URL, [{ uuid: b.uuid, drives: [mount(disk, '9:9', 'ide')] }])
  t.match(mountErr.json()[0].error_message, b.uuid, 'a bulk error names its server')
  t.match(await get(a.uuid), { name: 'keep-a', drives: [] }, 'unchanged')
  t.match(await get(b.uuid), { name: 'keep-b', mem: MINIMAL.mem, drives: [] }, 'unchanged')
  t.match(await get(theirs.uuid, bobApi), { name: 'bobs' }, "the other account's server is untouched")
  t.equal(await driveStatus(app, disk), 'unmounted')
})

t.test('DELETE /servers/ deletes every listed server; every body form and item form', async t => {
  const forms: Array<[string, (ids: any[]) => unknown]> = [
    ['{"objects": [{"uuid"}]}', s => ({ objects: s.map(x => ({ uuid: x.uuid })) })],
    ['a bare array of objects', s => s.map(x => ({ uuid: x.uuid }))],
    ['a bare array of uuids and URIs', s => [s[0].uuid, s[1].resource_uri]],
    ['{"objects": [uuid strings]}', s => ({ objects: s.map(x => x.uuid.toUpperCase()) })],
    ['one {"uuid"} and the same again', s => [{ uuid: s[0].uuid }, { resource_uri: s[1].resource_uri }, s[0].uuid]]
  ]
  for (const [what, body] of forms) {
    const servers = [await create(), await create()]
    const res = await api.delete(URL, body(servers))
    t.equal(res.statusCode, 204, `${what}: ${res.body}`)
    t.equal(res.body, '')
    for (const s of servers) t.equal((await api.get(`${URL}${s.uuid}/`)).statusCode, 404, `${what}: gone`)
  }
  const one = await create()
  t.equal((await api.delete(URL.slice(0, -1), { uuid: one.uuid })).statusCode, 204, 'one bare object, path without the slash')
  t.notOk(await exists(one.uuid))
})

t.test('DELETE /servers/ detaches drives; ?recurse= deletes the selected ones of every server', async t => {
  const [d1, d2, c1] = [await seedDrive(app, alice.id), await seedDrive(app, alice.id), await seedDrive(app, alice.id, { media: 'cdrom' })]
  const a = await create({ drives: [mount(d1), mount(c1, '0:0', 'ide')] })
  const b = await create({ drives: [mount(d2), mount(c1, '0:0', 'ide')] })
  const res = await api.delete(`${URL}?recurse=disks`, [a.uuid, b.uuid])
  t.equal(res.statusCode, 204, res.body)
  for (const d of [d1, d2]) t.equal((await api.get(`/api/2.0/drives/${d}/`)).statusCode, 404, 'each server\'s disk is deleted')
  t.equal(await app.prisma.job.count({ where: { operation: 'drive_delete', links: { some: { resourceId: { in: [d1, d2] } } } } }), 2)
  t.match((await api.get(`/api/2.0/drives/${c1}/`)).json(), { status: 'unmounted', mounted_on: [] }, 'the shared cdrom is only detached')

  const d3 = await seedDrive(app, alice.id)
  const c = await create({ drives: [mount(d3)] })
  t.equal((await api.delete(URL, [c.uuid])).statusCode, 204)
  t.equal(await driveStatus(app, d3), 'unmounted', 'without recurse the drive stays, unmounted')
  t.equal((await api.delete(`${URL}?recurse=everything`, [c.uuid])).statusCode, 400, 'recurse has three values')
})

t.test('DELETE /servers/ is all or none', async t => {
  const a = await create()
  const disk = await seedDrive(app, alice.id)
  const b = await create({ drives: [mount(disk)] })
  const live = await create()
  await app.prisma.server.update({ where: { id: live.uuid }, data: { status: 'running', activeSince: new Date() } })
  const moving = await create()
  await app.prisma.server.update({ where: { id: moving.uuid }, data: { status: 'starting' } })
  const theirs = await create({}, bobApi)
  const jobsBefore = await app.prisma.job.count()
  const cases: Array<[string, string, unknown, number, string, string | null]> = [
    ['an unknown server', URL, [a.uuid, randomUUID()], 404, 'notexist', 'uuid'],
    ["another account's server", URL, [a.uuid, theirs.uuid], 404, 'notexist', 'uuid'],
    ['a running server', `${URL}?recurse=all_drives`, [b.uuid, live.uuid], 400, 'validation', 'status'],
    ['a starting server', URL, [a.uuid, moving.uuid], 503, 'concurrency', 'status'],
    ['an item without uuid', URL, [a.uuid, { name: 'x' }], 400, 'validation', 'uuid'],
    ['a drive URI', URL, [`/api/2.0/drives/${a.uuid}/`], 400, 'validation', 'uuid'],
    ['an empty list', URL, { objects: [] }, 400, 'validation', null],
    ['an empty object', URL, {}, 400, 'validation', 'uuid'],
    ['null', URL, 'null', 400, 'validation', null],
    ['a number', URL, [7], 400, 'validation', null],
    ['no body', URL, undefined, 400, 'validation', null]
  ]
  for (const [what, url, body, status, type, point] of cases) {
    const res = await api.raw('DELETE', url, body)
    t.equal(res.statusCode, status, `${what}: ${res.body}`)
    t.equal(res.json()[0]?.error_type, type, what)
    if (point !== null) t.equal(res.json()[0].error_point, point, `${what}: error_point`)
  }
  const named = await api.raw('DELETE', URL, [a.uuid, live.uuid])
  t.match(named.json()[0].error_message, live.uuid, 'the error names the server')
  for (const s of [a, b, live, moving]) t.ok(await exists(s.uuid), 'nothing was deleted')
  t.ok(await exists(theirs.uuid), "the other account's server stays")
  t.same((await get(b.uuid)).drives.map((d: any) => d.drive.uuid), [disk], 'mounts stay')
  t.equal(await driveStatus(app, disk), 'mounted')
  t.equal(await app.prisma.job.count(), jobsBefore, 'no drive_delete job was queued')
})

t.test('more than BULK_MAX_OBJECTS servers in one create, update or delete: 400 at objects at once, nothing done', async t => {
  const before = await app.prisma.server.count({ where: { ownerId: alice.id } })
  const many = BULK_MAX_OBJECTS + 1
  // written one by one in one transaction, so many outlasted its time limit: a 503 after a minute that no retry got past
  const created = await api.post(URL, Array.from({ length: many }, () => ({ ...MINIMAL, drives: [mount(randomUUID())] })))
  const updated = await api.put(URL, Array.from({ length: many }, () => ({ uuid: randomUUID(), name: 'x' })))
  const deleted = await api.delete(URL, Array.from({ length: many }, () => randomUUID()))
  for (const [what, res] of [['create', created], ['update', updated], ['delete', deleted]] as const) {
    t.equal(res.statusCode, 400, `${what}: ${res.body.slice(0, 200)}`)
    t.match(res.json(), [{ error_type: 'validation', error_point: 'objects', error_message: new RegExp(`${BULK_MAX_OBJECTS}`) }], what)
  }
  t.equal(await app.prisma.server.count({ where: { ownerId: alice.id } }), before, 'no server made or removed')
  const empty = await api.put(URL, { objects: [] })
  t.match(empty.json(), [{ error_point: 'objects' }], 'an empty list is refused at objects too')
})
