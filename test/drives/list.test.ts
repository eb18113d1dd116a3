// GET /drives/, /drives/detail/, /drives/{uuid}/ and /drives/schema/: short and full objects,
// fields=, filters, order_by, paging, and one account never seeing another's drives.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { GiB, createDrive, readyDrive, waitStatus } from './helpers.ts'

const { app } = await buildTestApp(t)
const alice = await createUser(app)
const bob = await createUser(app)
const api = client(app, alice)
const bobApi = client(app, bob)

const tag = randomUUID()
const made: any[] = []
for (const [name, media, storage] of [['delta', 'disk', 'dssd'], ['alpha', 'cdrom', 'ssd'], ['charlie', 'disk', 'magnetic'], ['bravo', 'disk', 'dssd'], ['alpha, the second', 'cdrom', 'dssd']]) {
  made.push(await readyDrive(api, { name, media, storage_type: storage, size: GiB * (made.length + 1), tags: name === 'delta' || name === 'bravo' ? [tag] : [] }))
}
const bobs = await readyDrive(bobApi, { name: 'alpha' })

const uuids = (res: any) => res.json().objects.map((o: any) => o.uuid)
const names = async (q: string) => {
  const res = await api.get('/api/2.0/drives/detail/?limit=0&' + q)
  t.equal(res.statusCode, 200, q)
  return res.json().objects.map((o: any) => o.name)
}

t.test('the short list has owner, resource_uri, status and uuid, ordered by name', async t => {
  const res = await api.get('/api/2.0/drives/')
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.same(body.meta, { limit: 20, offset: 0, total_count: 5 })
  for (const o of body.objects) t.same(Object.keys(o), ['owner', 'resource_uri', 'status', 'uuid'])
  t.same(uuids(res), [made[1], made[4], made[3], made[2], made[0]].map(d => d.uuid), 'default order is name')
  t.notOk(uuids(res).includes(bobs.uuid), 'another account\'s drive is never listed')
})

t.test('detail/ returns full objects identical to a single GET', async t => {
  const res = await api.get('/api/2.0/drives/detail/?name=delta')
  const [d] = res.json().objects
  t.same(d, (await api.get(`/api/2.0/drives/${made[0].uuid}/`)).json())
  t.equal(d.size, GiB)
  t.equal(d.status, 'unmounted')
  t.same(d.jobs.length, 1)
})

t.test('fields= on the list, detail/ and a single GET', async t => {
  const res = await api.get('/api/2.0/drives/?fields=uuid,status&limit=0')
  t.same(res.json().objects.map((o: any) => Object.keys(o).sort()), Array(5).fill(['status', 'uuid']))
  t.same(Object.keys(res.json().meta).sort(), ['limit', 'offset', 'total_count'])
  const named = await api.get('/api/2.0/drives/?fields=name,size&name=bravo')
  t.same(named.json().objects, [{ name: 'bravo', size: 4 * GiB }], 'the short list can ask for any field')
  const one = await api.get(`/api/2.0/drives/${made[0].uuid}/?fields=name,runtime`)
  t.same(Object.keys(one.json()).sort(), ['name', 'runtime'])
})

t.test('fields= with a name the object does not have is a 400 naming it and the fields there are', async t => {
  const uuid = made[0].uuid
  for (const url of ['/api/2.0/drives/?fields=nope', '/api/2.0/drives/detail/?fields=uuid,nope', `/api/2.0/drives/${uuid}/?fields=nope`,
    '/api/2.0/servers/?fields=nope', '/api/2.0/servers/detail/?fields=nope', '/api/2.0/jobs/?fields=nope', '/api/2.0/jobs/detail/?fields=uuid,nope']) {
    const res = await api.get(url)
    t.equal(res.statusCode, 400, url)
    const [error] = res.json()
    t.equal(error.error_type, 'validation', url)
    t.equal(error.error_point, 'fields', url)
    t.match(error.error_message, /^Unknown field "nope" in fields; the fields are /, url)
  }
  const drive = (await api.get(`/api/2.0/drives/${uuid}/?fields=nope,Status`)).json()[0].error_message
  t.equal(drive, 'Unknown fields "nope", "Status" in fields; the fields are affinities, allow_multimount, backup_scheduler, grantees, iops, jobs, ' +
    'licenses, media, meta, mounted_on, name, owner, permissions, remote_snapshots, resource_uri, runtime, size, snapshots, status, storage_type, tags, uuid',
  'every unknown name, and the drive\'s fields')
  t.match((await api.get('/api/2.0/servers/?fields=nope')).json()[0].error_message, /the fields are auto_start, context, cpu, .*vnc_password$/)
  t.match((await api.get('/api/2.0/jobs/?fields=nope')).json()[0].error_message, /the fields are children, created, data, error, .*uuid$/)
  const missing = await api.get(`/api/2.0/drives/${'0'.repeat(8)}-0000-4000-8000-${'0'.repeat(12)}/?fields=nope`)
  t.equal(missing.statusCode, 400, 'the parameter is checked before the drive is looked up')
  t.equal((await api.get('/api/2.0/drives/?fields=')).statusCode, 200, 'an empty fields= keeps every field')
  t.same(Object.keys((await api.get(`/api/2.0/drives/${uuid}/?fields=uuid,,status`)).json()).sort(), ['status', 'uuid'], 'empty names between commas are skipped')
  t.equal((await api.get('/api/2.0/jobs/?fields=uuid,children,result')).statusCode, 200, 'a job\'s children and result are fields')
})

t.test('filters', async t => {
  t.same(await names('name=alpha'), ['alpha'])
  t.same(await names('name=alpha,bravo'), ['alpha', 'bravo'], 'commas OR')
  t.same(await names('name=alpha\\, the second'), ['alpha, the second'], 'an escaped comma')
  t.same(await names('name__contains=ALPH'), ['alpha', 'alpha, the second'], 'contains ignores case')
  t.same(await names(`uuid=${made[2].uuid},${made[3].uuid}`), ['bravo', 'charlie'])
  t.same(await names(`uuid=${bobs.uuid}`), [], 'another account\'s uuid matches nothing')
  t.same(await names(`tag=${tag}`), ['bravo', 'delta'])
  t.same(await names('media=cdrom'), ['alpha', 'alpha, the second'])
  t.same(await names('storage_type=ssd,magnetic'), ['alpha', 'charlie'])
  t.same(await names('media=disk&storage_type=dssd'), ['bravo', 'delta'], 'parameters AND')
  t.same(await names('status=unmounted'), ['alpha', 'alpha, the second', 'bravo', 'charlie', 'delta'])
  t.same(await names('status=creating,resizing'), [])
  for (const [q, point] of [['status=sleeping', 'status'], ['media=floppy', 'media'], ['uuid=nope', 'uuid'], ['tag=x', 'tag'], ['storage_type=tape', 'storage_type']]) {
    const bad = await api.get('/api/2.0/drives/?' + q)
    t.equal(bad.statusCode, 400, q)
    t.equal(bad.json()[0].error_point, point)
  }
})

t.test('contains matches %, _ and \\ literally, not as LIKE wildcards', async t => {
  const carolApi = client(app, await createUser(app))
  for (const name of ['100% full', '100 full', 'a_b', 'axb', 'back\\slash', 'backslash']) await createDrive(carolApi, { name })
  const contains = async (value: string) => {
    const res = await carolApi.get('/api/2.0/drives/detail/?limit=0&name__contains=' + encodeURIComponent(value))
    t.equal(res.statusCode, 200, value)
    return res.json().objects.map((o: any) => o.name)
  }
  t.same(await contains('%'), ['100% full'], 'a % is a percent sign, not any text')
  t.same(await contains('0% F'), ['100% full'], 'and still ignores case')
  t.same(await contains('_'), ['a_b'], 'an _ is an underscore, not any character')
  t.same(await contains('A_B'), ['a_b'])
  t.same(await contains('\\'), ['back\\slash'], 'a backslash is a backslash')
  t.same(await contains('k\\s'), ['back\\slash'], 'not an escape of the next character')
})

t.test('cloning_src is a filterable display status', async t => {
  await app.prisma.drive.update({ where: { id: made[3].uuid }, data: { readers: 2 } })
  t.teardown(() => app.prisma.drive.update({ where: { id: made[3].uuid }, data: { readers: 0 } }))
  t.same(await names('status=cloning_src'), ['bravo'])
  t.notOk((await names('status=unmounted')).includes('bravo'))
  t.equal((await api.get(`/api/2.0/drives/${made[3].uuid}/`)).json().status, 'cloning_src')
})

t.test('order_by and paging', async t => {
  t.same(await names('order_by=-name'), ['delta', 'charlie', 'bravo', 'alpha, the second', 'alpha'])
  t.same(await names('order_by=-size'), ['alpha, the second', 'bravo', 'charlie', 'alpha', 'delta'])
  t.same(await names('order_by=media,name'), ['alpha', 'alpha, the second', 'bravo', 'charlie', 'delta'])
  const page = await api.get('/api/2.0/drives/?limit=2&offset=2')
  t.same(page.json().meta, { limit: 2, offset: 2, total_count: 5 })
  t.same(uuids(page), [made[3].uuid, made[2].uuid])
  const all = await api.get('/api/2.0/drives/?limit=0')
  t.equal(all.json().meta.limit, 0)
  t.equal(all.json().objects.length, 5)
  const bad = await api.get('/api/2.0/drives/?order_by=owner')
  t.equal(bad.statusCode, 400)
  t.equal(bad.json()[0].error_point, 'order_by')
})

t.test('another account\'s drive is 404 on every route, and nothing changes', async t => {
  const url = `/api/2.0/drives/${bobs.uuid}/`
  const calls = [
    await api.get(url),
    await api.put(url, { name: 'mine' }),
    await api.delete(url),
    await api.post(`${url}action/?do=resize`, { size: 2 * GiB }),
    await api.delete('/api/2.0/drives/', { objects: [{ uuid: bobs.uuid }] }),
    await api.get(`/api/2.0/drives/${randomUUID()}/`)
  ]
  for (const res of calls) {
    t.equal(res.statusCode, 404)
    t.equal(res.json()[0].error_type, 'notexist')
  }
  const still = (await bobApi.get(url)).json()
  t.equal(still.name, 'alpha')
  t.equal(still.size, GiB)
  t.equal(still.status, 'unmounted')
  t.equal((await api.get('/api/2.0/drives/not-a-uuid/')).statusCode, 400)
})

t.test('the schema endpoint describes the drive', async t => {
  const s = (await api.get('/api/2.0/drives/schema/')).json()
  t.same(s.allowed_detail_http_methods, ['get', 'put', 'delete'])
  t.equal(s.default_limit, 20)
  t.same(s.fields.media.choices, ['disk', 'cdrom'])
  t.equal(s.fields.media.required, true)
  t.equal(s.fields.storage_type.default, 'dssd')
  t.ok(s.fields.status.choices.includes('cloning_src'))
  t.equal(s.fields.status.readonly, true)
  t.equal(s.fields.tags.type, 'related')
  t.equal(s.fields.meta.type, 'dict')
  t.equal(s.fields.size.type, 'integer')
  t.equal(s.filtering.name__contains, 'exact')
  t.ok(s.ordering.includes('name'))
})

t.test('a new drive shows creating in the list until its job finishes', async t => {
  const d = await createDrive(api, { name: 'zulu' })
  t.equal(d.status, 'creating')
  await waitStatus(api, d.uuid, 'unmounted')
  t.same(await names('name=zulu'), ['zulu'])
})
