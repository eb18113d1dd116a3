// The server resource (§3): create in every body form, defaults and limits, get, lists, fields=,
// filters, order_by, paging, schema/, PUT, delete, and isolation between accounts.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { MINIMAL, seedDrive } from './helpers.ts'

const { app } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const bob = await createUser(app)
const api = client(app, alice)
const bobApi = client(app, bob)

async function create (body: unknown, as = api) {
  const res = await as.post('/api/2.0/servers/', body)
  if (res.statusCode !== 201) throw new Error(`create failed: ${res.statusCode} ${res.body}`)
  return res.json().objects
}

t.test('a minimal create gets every default (§3.1) and 201 {"objects": [...]}', async t => {
  const res = await api.post('/api/2.0/servers/', MINIMAL)
  t.equal(res.statusCode, 201)
  const body = res.json()
  t.same(Object.keys(body), ['objects'])
  const s = body.objects[0]
  t.match(s, {
    name: 'web',
    cpu: 1000,
    mem: 536870912,
    vnc_password: 'secret',
    smp: 1,
    context: true,
    cpu_type: 'amd',
    hypervisor: 'kvm',
    cpu_model: null,
    cpus_instead_of_cores: false,
    enable_numa: false,
    hv_relaxed: false,
    hv_tsc: false,
    auto_start: false,
    status: 'stopped',
    runtime: null
  })
  for (const key of ['pubkeys', 'requirements', 'grantees', 'permissions', 'tags', 'nics', 'drives', 'jobs']) t.same(s[key], [], key)
  t.same(s.meta, {})
  t.match(s.uuid, /^[0-9a-f-]{36}$/)
  t.equal(s.resource_uri, `/api/2.0/servers/${s.uuid}/`)
  t.same(s.owner, { resource_uri: `/api/2.0/user/${alice.id}/`, uuid: alice.id })
  t.same(Object.keys(s), [...Object.keys(s)].sort(), 'keys are alphabetical')
})

t.test('all three body forms and an atomic bulk create', async t => {
  t.equal((await create([{ ...MINIMAL, name: 'arr1' }, { ...MINIMAL, name: 'arr2' }])).length, 2, 'bare array')
  t.equal((await create({ objects: [{ ...MINIMAL, name: 'obj1' }] })).length, 1, '{"objects": [...]}')
  const before = await app.prisma.server.count({ where: { ownerId: alice.id } })
  const bad = await api.post('/api/2.0/servers/', { objects: [{ ...MINIMAL, name: 'ok' }, { ...MINIMAL, name: 'bad', cpu: 10 }] })
  t.equal(bad.statusCode, 400)
  t.equal(bad.json()[0].error_point, 'cpu')
  t.equal(await app.prisma.server.count({ where: { ownerId: alice.id } }), before, 'nothing created when one object is invalid')
  const badMount = await api.post('/api/2.0/servers/', [{ ...MINIMAL, name: 'ok' }, { ...MINIMAL, drives: [{ device: 'virtio', dev_channel: '0:0', drive: randomUUID() }] }])
  t.equal(badMount.statusCode, 400)
  t.equal(await app.prisma.server.count({ where: { ownerId: alice.id } }), before, 'nothing created when a later mount fails in the database check')
})

t.test('required fields, limits and numeric strings', async t => {
  for (const field of ['name', 'cpu', 'mem', 'vnc_password']) {
    const body: Record<string, unknown> = { ...MINIMAL }
    delete body[field]
    const res = await api.post('/api/2.0/servers/', body)
    t.equal(res.statusCode, 400, `${field} is required`)
    t.equal(res.json()[0].error_point, field)
  }
  const limits: Array<[string, unknown]> = [['cpu', 249], ['cpu', 96001], ['mem', 268435455], ['mem', 558345748481], ['smp', 0], ['smp', 33], ['cpu_type', 'arm'], ['cpu_model', 'qemu64']]
  for (const [field, value] of limits) {
    const res = await api.post('/api/2.0/servers/', { ...MINIMAL, [field]: value })
    t.equal(res.statusCode, 400, `${field}=${value}`)
    t.equal(res.json()[0].error_point, field)
  }
  const [edge] = await create({ ...MINIMAL, cpu: '96000', mem: '558345748480', smp: 32, cpu_model: 'kvm64', cpu_type: 'intel' })
  t.match(edge, { cpu: 96000, mem: 558345748480, smp: 32, cpu_model: 'kvm64', cpu_type: 'intel' })
  const [low] = await create({ ...MINIMAL, cpu: 250, mem: 268435456 })
  t.match(low, { cpu: 250, mem: 268435456 })
})

t.test('read-only fields in a body are ignored; meta, tags and pubkeys round-trip', async t => {
  const tag = randomUUID()
  const key = randomUUID()
  const [s] = await create({
    ...MINIMAL,
    status: 'running',
    runtime: { active_since: 'x' },
    uuid: randomUUID(),
    owner: { uuid: bob.id },
    meta: { ssh_public_key: 'ssh-rsa AAA', 'cloudinit-user-data': 'x' },
    tags: [tag, { uuid: tag }],
    pubkeys: [`/api/2.0/keypairs/${key}/`],
    context: false,
    requirements: ['ssd']
  })
  t.equal(s.status, 'stopped')
  t.equal(s.runtime, null)
  t.equal(s.owner.uuid, alice.id)
  t.same(s.meta, { ssh_public_key: 'ssh-rsa AAA', 'cloudinit-user-data': 'x' })
  t.same(s.tags, [{ resource_uri: `/api/2.0/tags/${tag}/`, uuid: tag }], 'duplicate tags merged')
  t.same(s.pubkeys, [{ resource_uri: `/api/2.0/keypairs/${key}/`, uuid: key }])
  t.equal(s.context, false)
  t.same(s.requirements, ['ssd'])
  const badMeta = await api.post('/api/2.0/servers/', { ...MINIMAL, meta: { ['k'.repeat(33)]: 'v' } })
  t.equal(badMeta.json()[0].error_point, 'meta')
})

t.test('NICs: generated MACs, default model, IP refs, validity', async t => {
  const vlan = randomUUID()
  const [s] = await create({
    ...MINIMAL,
    nics: [
      { ip_v4_conf: { conf: 'dhcp' } },
      { ip_v4_conf: { conf: 'static', ip: '/api/2.0/ips/94.26.101.149/' }, model: 'e1000' },
      { vlan: { uuid: vlan } }
    ]
  })
  t.equal(s.nics.length, 3)
  for (const n of s.nics) t.match(n.mac, /^22(:[0-9a-f]{2}){5}$/)
  t.match(s.nics[0], { model: 'virtio', ip_v4_conf: { conf: 'dhcp', ip: null }, vlan: null, runtime: null, boot_order: null, ip_v6_conf: null })
  t.same(s.nics[1].ip_v4_conf, { conf: 'static', ip: { resource_uri: '/api/2.0/ips/94.26.101.149/', uuid: '94.26.101.149' } })
  t.same(s.nics[2].vlan, { resource_uri: `/api/2.0/vlans/${vlan}/`, uuid: vlan })
  t.equal(s.nics[2].ip_v4_conf, null)
  const bad = await api.post('/api/2.0/servers/', { ...MINIMAL, nics: [{ ip_v4_conf: { conf: 'dhcp', ip: '10.0.0.1' } }] })
  t.equal(bad.statusCode, 400)
  t.equal(bad.json()[0].error_point, 'ip', 'a refused NIC field is named, as a schema error at it would be')
  // each refused NIC field is the error's point, and the message says where it sits
  for (const [nic, point, message] of [
    [{ vlan: 'not a uuid' }, 'vlan', /^nics\[0\]\.vlan must be a uuid/],
    [{ ip_v4_conf: { conf: 'dhcp' }, firewall_policy: 'nope' }, 'firewall_policy', /^nics\[0\]\.firewall_policy must be a uuid/],
    [{ ip_v4_conf: { conf: 'static', ip: 'not-an-ip' } }, 'ip', /^nics\[0\]\.ip_v4_conf\.ip not-an-ip is not an IPv4 address/],
    [{ ip_v4_conf: { conf: 'static', ip: '2001:db8::1' } }, 'ip', /is not an IPv4 address/],
    [{ ip_v4_conf: { conf: 'static' } }, 'ip', /conf static needs an ip/],
    [{ ip_v4_conf: { conf: 'dhcp' }, vlan }, 'nics', /either a vlan or an IP configuration/]
  ] as const) {
    const res = await api.post('/api/2.0/servers/', { ...MINIMAL, nics: [nic] })
    t.equal(res.statusCode, 400, JSON.stringify(nic))
    t.equal(res.json()[0].error_point, point, JSON.stringify(nic))
    t.match(res.json()[0].error_message, message, JSON.stringify(nic))
  }

  // update matches by mac: keep the second, drop the others, add one
  const res = await api.put(`/api/2.0/servers/${s.uuid}/`, { nics: [s.nics[1], { ip_v4_conf: { conf: 'manual' } }] })
  t.equal(res.statusCode, 200)
  const nics = res.json().nics
  t.equal(nics.length, 2)
  t.equal(nics[0].mac, s.nics[1].mac, 'kept by MAC, echoed output accepted as input')
  t.equal(nics[0].model, 'e1000')
  t.notOk(s.nics.some((n: { mac: string }) => n.mac === nics[1].mac), 'a new MAC for the new NIC')
  const unknown = await api.put(`/api/2.0/servers/${s.uuid}/`, { nics: [{ mac: '22:00:00:00:00:01', ip_v4_conf: { conf: 'dhcp' } }] })
  t.equal(unknown.statusCode, 400)
  t.match(unknown.json()[0].error_message, /unknown mac/)
  t.equal(unknown.json()[0].error_point, 'mac')
  const twice = await api.put(`/api/2.0/servers/${s.uuid}/`, { nics: [s.nics[1], s.nics[1]] })
  t.equal(twice.statusCode, 400)
  t.match(twice.json()[0].error_message, /listed twice/)
  t.equal(twice.json()[0].error_point, 'mac')
  t.equal((await api.get(`/api/2.0/servers/${s.uuid}/`)).json().nics.length, 2, 'nothing changed by the refused update')
})

t.test('GET one server, fields=, and 404s', async t => {
  const [s] = await create({ ...MINIMAL, name: 'single' })
  const res = await api.get(`/api/2.0/servers/${s.uuid}/`)
  t.equal(res.statusCode, 200)
  t.same(res.json(), s)
  t.same(Object.keys((await api.get(`/api/2.0/servers/${s.uuid}/?fields=uuid,status`)).json()).sort(), ['status', 'uuid'])
  t.equal((await api.get(`/api/2.0/servers/${s.uuid}`)).statusCode, 200, 'without the trailing slash')
  const missing = await api.get(`/api/2.0/servers/${randomUUID()}/`)
  t.equal(missing.statusCode, 404)
  t.equal(missing.json()[0].error_type, 'notexist')
})

t.test('short list, detail/, filters, order_by and paging', async t => {
  const carol = await createUser(app)
  const c = client(app, carol)
  const tag = randomUUID()
  const made = await create([
    { ...MINIMAL, name: 'beta' },
    { ...MINIMAL, name: 'alpha', tags: [tag] },
    { ...MINIMAL, name: 'gamma-web' },
    { ...MINIMAL, name: 'delta-web', tags: [tag] }
  ], c)
  await create({ ...MINIMAL, name: 'alpha' }, bobApi)
  const short = (await c.get('/api/2.0/servers/')).json()
  t.same(short.meta, { limit: 20, offset: 0, total_count: 4 }, 'only this account\'s servers')
  t.same(short.objects.map((o: { name: string }) => o.name), ['alpha', 'beta', 'delta-web', 'gamma-web'], 'ordered by name by default')
  t.same(Object.keys(short.objects[0]).sort(), ['name', 'owner', 'resource_uri', 'runtime', 'status', 'uuid'])
  const detail = (await c.get('/api/2.0/servers/detail/')).json()
  t.equal(detail.objects.length, 4)
  t.same(detail.objects[0], (await c.get(`/api/2.0/servers/${detail.objects[0].uuid}/`)).json(), 'detail objects equal single GETs')
  const names = async (q: string) => (await c.get(`/api/2.0/servers/detail/?limit=0&${q}`)).json().objects.map((o: { name: string }) => o.name)
  t.same(await names('name=alpha,beta'), ['alpha', 'beta'])
  t.same(await names('name__contains=WEB'), ['delta-web', 'gamma-web'])
  t.same(await names(`tag=${tag}`), ['alpha', 'delta-web'])
  t.same(await names(`uuid=${made[0].uuid}`), ['beta'])
  t.same(await names('status=stopped&name=gamma-web'), ['gamma-web'])
  t.same(await names('status=running'), [])
  t.same(await names('order_by=-name'), ['gamma-web', 'delta-web', 'beta', 'alpha'])
  t.equal((await c.get('/api/2.0/servers/?status=dancing')).statusCode, 400)
  t.equal((await c.get('/api/2.0/servers/?order_by=vnc_password')).json()[0].error_point, 'order_by')
  const page = (await c.get('/api/2.0/servers/?limit=2&offset=1')).json()
  t.same(page.meta, { limit: 2, offset: 1, total_count: 4 })
  t.same(page.objects.map((o: { name: string }) => o.name), ['beta', 'delta-web'])
  const slim = (await c.get('/api/2.0/servers/detail/?fields=uuid,cpu&limit=1')).json()
  t.same(Object.keys(slim.objects[0]).sort(), ['cpu', 'uuid'])
  const shortWithField = (await c.get('/api/2.0/servers/?fields=name,vnc_password&limit=1')).json()
  t.same(shortWithField.objects[0], { name: 'alpha', vnc_password: 'secret' }, 'fields= may ask the short list for any field')
})

t.test('name__contains matches %, _ and \\ literally', async t => {
  const dave = client(app, await createUser(app))
  await create(['50% off', '50 off', 'x_y', 'xzy', 'c:\\web', 'c:web'].map(name => ({ ...MINIMAL, name })), dave)
  const names = async (value: string) => (await dave.get('/api/2.0/servers/detail/?limit=0&name__contains=' + encodeURIComponent(value))).json().objects.map((o: { name: string }) => o.name)
  t.same(await names('%'), ['50% off'])
  t.same(await names('x_'), ['x_y'])
  t.same(await names('\\'), ['c:\\web'])
  t.same(await names(':\\w'), ['c:\\web'], 'a backslash escapes nothing')
})

t.test('schema/ describes the server resource', async t => {
  const res = await api.get('/api/2.0/servers/schema/')
  t.equal(res.statusCode, 200)
  const s = res.json()
  t.same(s.allowed_detail_http_methods, ['get', 'put', 'delete'])
  t.equal(s.default_limit, 20)
  t.match(s.fields.name, { required: true, readonly: false, type: 'string' })
  t.match(s.fields.status, { readonly: true })
  t.ok(s.fields.status.choices.includes('running'))
  t.match(s.fields.smp, { default: 1, type: 'integer' })
  t.match(s.fields.context, { default: true, type: 'boolean' })
  t.match(s.fields.cpu_type, { default: 'amd' })
  t.equal(s.fields.tags.type, 'related')
  t.equal(s.fields.drives.type, 'list')
  t.match(s.filtering, { name: 'exact', name__contains: 'exact', tag: 'exact', uuid: 'exact', status: 'exact' })
  t.ok(s.ordering.includes('name'))
})

t.test('PUT is partial and keeps what it does not send', async t => {
  const [s] = await create({ ...MINIMAL, name: 'before', meta: { a: '1' }, tags: [randomUUID()] })
  const res = await api.put(`/api/2.0/servers/${s.uuid}/`, { name: 'after', cpu: 2000, smp: 2, hv_tsc: true })
  t.equal(res.statusCode, 200)
  const u = res.json()
  t.match(u, { name: 'after', cpu: 2000, smp: 2, hv_tsc: true, mem: MINIMAL.mem, vnc_password: 'secret', meta: { a: '1' } })
  t.same(u.tags, s.tags)
  t.equal(u.context, true, 'extra fields not sent keep their value')
  // a whole object echoed back (read-only fields included) is accepted
  const echoed = await api.put(`/api/2.0/servers/${s.uuid}/`, { ...u, meta: { b: '2' } })
  t.equal(echoed.statusCode, 200)
  t.same(echoed.json().meta, { b: '2' }, 'meta is replaced as a whole')
  t.equal((await api.put(`/api/2.0/servers/${s.uuid}/`, { mem: 1 })).statusCode, 400, 'limits apply to PUT')
})

t.test('DELETE removes a stopped server', async t => {
  const [s] = await create(MINIMAL)
  const res = await api.delete(`/api/2.0/servers/${s.uuid}/`)
  t.equal(res.statusCode, 204)
  t.equal(res.body, '')
  t.equal((await api.get(`/api/2.0/servers/${s.uuid}/`)).statusCode, 404)
  t.equal((await api.delete(`/api/2.0/servers/${s.uuid}/`)).statusCode, 404)
  t.equal((await api.delete(`/api/2.0/servers/${s.uuid}/?recurse=everything`)).statusCode, 400, 'recurse has three values')
})

t.test('another account\'s server is 404 everywhere', async t => {
  const [s] = await create({ ...MINIMAL, name: 'bobs' }, bobApi)
  const url = `/api/2.0/servers/${s.uuid}/`
  for (const res of [
    await api.get(url),
    await api.put(url, { name: 'mine' }),
    await api.delete(url),
    await api.post(`${url}action/?do=start`),
    await api.post(`${url}action/?do=open_vnc`)
  ]) {
    t.equal(res.statusCode, 404)
    t.equal(res.json()[0].error_type, 'notexist')
  }
  const again = (await bobApi.get(url)).json()
  t.match(again, { name: 'bobs', status: 'stopped' }, 'nothing changed for its owner')
  t.equal((await api.get(`/api/2.0/servers/?limit=0&uuid=${s.uuid}`)).json().meta.total_count, 0, 'not listed')
})

t.test('unknown actions are 400 at do', async t => {
  const [s] = await create(MINIMAL)
  const res = await api.post(`/api/2.0/servers/${s.uuid}/action/?do=explode`)
  t.equal(res.statusCode, 400)
  t.equal(res.json()[0].error_point, 'do')
  t.match(res.json()[0].error_message, /start/)
})

t.test('changes are announced as events for servers and the drives they mount', async t => {
  const disk = await seedDrive(app, alice.id)
  const since = (await app.prisma.event.findFirst({ orderBy: { id: 'desc' } }))?.id ?? 0n
  const [s] = await create({ ...MINIMAL, drives: [{ device: 'virtio', dev_channel: '0:0', drive: disk }] })
  await api.put(`/api/2.0/servers/${s.uuid}/`, { name: 'renamed' })
  await api.delete(`/api/2.0/servers/${s.uuid}/`)
  const events = await app.prisma.event.findMany({ where: { id: { gt: since } }, orderBy: { id: 'asc' } })
  t.equal(events.filter(e => e.resourceType === 'servers' && e.resourceId === s.uuid).length, 3, 'create, update, delete')
  t.equal(events.filter(e => e.resourceType === 'drives' && e.resourceId === disk).length, 2, 'attached, then detached')
  t.ok(events.every(e => e.ownerId === alice.id))
  t.equal(events.find(e => e.resourceType === 'servers')?.resourceUri, `/api/2.0/servers/${s.uuid}/`)
})

t.test('the OpenAPI document names the server schemas', async t => {
  const doc = app.swagger() as { components: { schemas: Record<string, unknown> }, paths: Record<string, unknown> }
  for (const name of ['Server', 'ServerMount', 'ServerNic', 'ServerCreateBody', 'ServerUpdateInput']) t.ok(doc.components.schemas[name], name)
  t.ok(doc.paths['/api/2.0/servers/{uuid}/action/'])
})
