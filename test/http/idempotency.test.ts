// Issue 15: Idempotency-Key (AIP-155, Stripe) on POSTs that create objects or start jobs. A retry
// with the same key and body returns the first answer and does nothing again (rows are counted);
// another body is 400; keys are per account; a key still in flight is 503; keys expire via purge.
import t from 'tap'
import { buildTestApp, client, createUser } from '../helpers/app.ts'

const { app } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const bob = await createUser(app)
const api = client(app, alice)
const key = (k: string) => ({ 'idempotency-key': k })
const counts = async () => ({
  drives: await app.prisma.drive.count(),
  servers: await app.prisma.server.count(),
  jobs: await app.prisma.job.count()
})
const SERVER = { name: 's', cpu: 1000, mem: 536870912, vnc_password: 'secret' }

t.test('a retried drive create returns the same objects and jobs and creates nothing', async t => {
  const body = [{ name: 'a', size: 1048576, media: 'disk' }, { name: 'b', size: 1048576, media: 'cdrom' }]
  const first = await api.post('/api/2.0/drives/', body, key('create-1'))
  t.equal(first.statusCode, 201)
  t.notOk(first.headers['idempotent-replayed'])
  const before = await counts()
  const again = await api.post('/api/2.0/drives/', body, key('create-1'))
  t.equal(again.statusCode, 201)
  t.equal(again.headers['idempotent-replayed'], 'true')
  t.equal(again.body, first.body, 'byte for byte the first answer')
  t.same(again.json().objects.map((o: any) => [o.uuid, o.jobs[0].uuid]), first.json().objects.map((o: any) => [o.uuid, o.jobs[0].uuid]))
  t.match(again.headers['content-type'], /application\/json/)
  t.same(await counts(), before, 'no new drive, no new job')
  const fresh = await api.post('/api/2.0/drives/', body, key('create-2'))
  t.equal(fresh.statusCode, 201)
  t.not(fresh.json().objects[0].uuid, first.json().objects[0].uuid, 'a new key does new work')
  const none = await api.post('/api/2.0/drives/', body)
  t.not(none.json().objects[0].uuid, first.json().objects[0].uuid, 'no key: no replay')
})

t.test('server create and server clone replay too (Location kept)', async t => {
  const first = await api.post('/api/2.0/servers/', SERVER, key('srv-1'))
  t.equal(first.statusCode, 201)
  const again = await api.post('/api/2.0/servers/', SERVER, key('srv-1'))
  t.equal(again.headers['idempotent-replayed'], 'true')
  t.equal(again.headers.location, first.headers.location)
  t.equal(again.json().objects[0].uuid, first.json().objects[0].uuid)
  const src = first.json().objects[0].uuid
  const before = await counts()
  const clone = await api.post(`/api/2.0/servers/${src}/action/?do=clone`, { name: 'c' }, key('clone-1'))
  t.equal(clone.statusCode, 202, clone.body)
  const mid = await counts()
  t.equal(mid.servers, before.servers + 1)
  const cloneAgain = await api.post(`/api/2.0/servers/${src}/action/?do=clone`, { name: 'c' }, key('clone-1'))
  t.equal(cloneAgain.statusCode, 202)
  t.equal(cloneAgain.json().uuid, clone.json().uuid, 'the same new server')
  t.same(cloneAgain.json().jobs, clone.json().jobs, 'the same job')
  t.same(await counts(), mid, 'nothing cloned twice')
  const otherQuery = await api.post(`/api/2.0/servers/${src}/action/?do=start`, { name: 'c' }, key('clone-1'))
  t.equal(otherQuery.statusCode, 400, 'the same key with another query string (same path) is another request: 400')
})

t.test('the same request written another way replays: no trailing slash, keys and parameters in another order', async t => {
  const first = await api.post('/api/2.0/drives/?avoid=&x=1', { name: 'spelled', size: 1048576, media: 'disk', meta: { a: '1', b: '2' } }, key('spelling-1'))
  t.equal(first.statusCode, 201)
  const before = await counts()
  const again = await api.post('/api/2.0/drives?x=1&avoid=', { meta: { b: '2', a: '1' }, media: 'disk', size: 1048576, name: 'spelled' }, key('spelling-1'))
  t.equal(again.statusCode, 201, again.body.slice(0, 200))
  t.equal(again.headers['idempotent-replayed'], 'true', 'the same route, the same body: a replay')
  t.equal(again.body, first.body)
  t.same(await counts(), before, 'nothing made twice')
  const other = await api.post('/api/2.0/drives/', { name: 'spelled', size: 2097152, media: 'disk', meta: { a: '1', b: '2' } }, key('spelling-1'))
  t.equal(other.statusCode, 400, 'another body is still refused')
})

t.test('the same key with another body: 400 at Idempotency-Key, nothing done', async t => {
  const first = await api.post('/api/2.0/drives/', { name: 'x', size: 1048576, media: 'disk' }, key('body-1'))
  t.equal(first.statusCode, 201)
  const before = await counts()
  const other = await api.post('/api/2.0/drives/', { name: 'y', size: 1048576, media: 'disk' }, key('body-1'))
  t.equal(other.statusCode, 400)
  t.same(other.json(), [{ error_type: 'validation', error_message: other.json()[0].error_message, error_point: 'Idempotency-Key' }])
  t.same(await counts(), before)
  const bad = await api.post('/api/2.0/drives/', { name: 'y', size: 1048576, media: 'disk' }, key('x'.repeat(256)))
  t.equal(bad.statusCode, 400, 'a key longer than 255 characters')
  t.equal(bad.json()[0].error_point, 'Idempotency-Key')
})

t.test('a repeated Idempotency-Key header is 400 even when Node joins the copies into one string', async t => {
  const before = await counts()
  const body = JSON.stringify({ name: 'dup', size: 1048576, media: 'disk' })
  for (const values of [['dup-1', 'dup-1'], ['dup-2', 'other']]) {
    const res = await app.inject({ method: 'POST', url: '/api/2.0/drives/', payload: body, headers: { authorization: alice.authorization, 'content-type': 'application/json', 'idempotency-key': values } })
    t.equal(res.statusCode, 400, `${values.join(' + ')}: ${res.statusCode} ${res.body.slice(0, 200)}`)
    t.same(res.json(), [{ error_type: 'validation', error_message: res.json()[0]?.error_message, error_point: 'Idempotency-Key' }])
  }
  t.same(await counts(), before, 'nothing done')
  // one header whose value has a comma is one key
  const one = await api.post('/api/2.0/drives/', { name: 'dup', size: 1048576, media: 'disk' }, key('dup-3, dup-3'))
  t.equal(one.statusCode, 201)
  t.equal((await api.post('/api/2.0/drives/', { name: 'dup', size: 1048576, media: 'disk' }, key('dup-3, dup-3'))).json().objects[0].uuid, one.json().objects[0].uuid, 'and replays')
})

t.test('keys are per account: another account with the same key gets its own answer', async t => {
  const body = { name: 'mine', size: 1048576, media: 'disk' }
  const a = await api.post('/api/2.0/drives/', body, key('shared-key'))
  const b = await client(app, bob).post('/api/2.0/drives/', body, key('shared-key'))
  t.equal(b.statusCode, 201)
  t.notOk(b.headers['idempotent-replayed'])
  t.not(b.json().objects[0].uuid, a.json().objects[0].uuid)
  t.equal(b.json().objects[0].owner.uuid, bob.id, "bob's own drive, not alice's replayed")
})

t.test('a 4xx answer is replayed; a 5xx/503 is not kept', async t => {
  const bad = { name: 'big', size: 0, media: 'disk' }
  const first = await api.post('/api/2.0/drives/', bad, key('err-1'))
  t.equal(first.statusCode, 400)
  const again = await api.post('/api/2.0/drives/', bad, key('err-1'))
  t.equal(again.statusCode, 400)
  t.equal(again.headers['idempotent-replayed'], 'true')
  t.equal(again.body, first.body)
  // a busy answer (503) releases the key: the retry does the work once the resource is free
  const d = await api.post('/api/2.0/drives/', { name: 'busy', size: 1048576, media: 'disk' })
  const uuid = d.json().objects[0].uuid
  const busy = await api.post(`/api/2.0/drives/${uuid}/action/?do=clone`, {}, key('busy-1'))
  t.equal(busy.statusCode, 503, 'the drive is still creating (no workers)')
  t.equal(await app.prisma.idempotencyKey.count({ where: { key: 'busy-1' } }), 0, 'not kept')
})

t.test('a key whose first request is still running answers 503 concurrency with Retry-After', async t => {
  await app.prisma.idempotencyKey.create({ data: { ownerId: alice.id, method: 'POST', path: '/api/2.0/servers/', key: 'inflight', fingerprint: 'x' } })
  const before = await counts()
  const res = await api.post('/api/2.0/servers/', SERVER, key('inflight'))
  t.equal(res.statusCode, 400, 'another fingerprint is still 400')
  const row = await app.prisma.idempotencyKey.findFirstOrThrow({ where: { key: 'inflight' } })
  // same fingerprint as the request: take it from a real claim
  const probe = await api.post('/api/2.0/servers/', SERVER, key('probe'))
  const probeRow = await app.prisma.idempotencyKey.findFirstOrThrow({ where: { key: 'probe' } })
  t.equal(probe.statusCode, 201)
  await app.prisma.idempotencyKey.update({ where: { ownerId_method_path_key: { ownerId: row.ownerId, method: row.method, path: row.path, key: row.key } }, data: { fingerprint: probeRow.fingerprint } })
  const busy = await api.post('/api/2.0/servers/', SERVER, key('inflight'))
  t.equal(busy.statusCode, 503)
  t.equal(busy.json()[0].error_type, 'concurrency')
  t.equal(busy.json()[0].error_point, 'Idempotency-Key')
  t.equal(busy.headers['retry-after'], '1')
  t.equal((await counts()).servers, before.servers + 1, 'only the probe made a server')
  // two at once with one key: exactly one server is made; the other answer is a replay or 503
  const [x, y] = await Promise.all([1, 2].map(() => api.post('/api/2.0/servers/', SERVER, key('race'))))
  const codes = [x.statusCode, y.statusCode].sort()
  t.ok(codes[0] === 201 && (codes[1] === 201 || codes[1] === 503), `codes ${codes.join(',')}`)
  t.equal((await counts()).servers, before.servers + 2, 'one server for the two racing requests')
})

t.test('keys expire after 24 hours: the purge deletes them and a retry does the work again', async t => {
  const body = { name: 'old', size: 1048576, media: 'disk' }
  const first = await api.post('/api/2.0/drives/', body, key('expire-1'))
  t.equal(await app.purgeIdempotencyKeys(), 0, 'a fresh key stays')
  t.equal(await app.prisma.idempotencyKey.count({ where: { key: 'expire-1' } }), 1)
  const purged = await app.purgeIdempotencyKeys(() => new Date(Date.now() + 24 * 3_600_000 + 1000))
  t.ok(purged >= 1)
  t.equal(await app.prisma.idempotencyKey.count({ where: { key: 'expire-1' } }), 0, 'gone after 24 h')
  const again = await api.post('/api/2.0/drives/', body, key('expire-1'))
  t.equal(again.statusCode, 201)
  t.notOk(again.headers['idempotent-replayed'])
  t.not(again.json().objects[0].uuid, first.json().objects[0].uuid, 'new work')
  // an expired key not purged yet is not replayed either
  await app.prisma.$executeRaw`UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'expire-1'`
  const third = await api.post('/api/2.0/drives/', body, key('expire-1'))
  t.notOk(third.headers['idempotent-replayed'])
  t.not(third.json().objects[0].uuid, again.json().objects[0].uuid)
})

t.test('the OpenAPI document lists the header on those operations', async t => {
  const doc = app.swagger() as any
  const params = (p: string) => (doc.paths[p].post.parameters ?? []).map((x: any) => `${x.in}:${x.name}`)
  for (const p of ['/api/2.0/drives/', '/api/2.0/servers/', '/api/2.0/drives/{uuid}/action/', '/api/2.0/servers/{uuid}/action/', '/api/2.0/_upload/', '/api/2.0/initupload/']) {
    t.ok(params(p).includes('header:idempotency-key'), p)
  }
  t.notOk((doc.paths['/api/2.0/jobs/{uuid}/action/'].post.parameters ?? []).some((x: any) => x.name === 'idempotency-key'), 'not on job cancel')
})

t.test('a raw upload (PUT, as curl -T sends it) replays its uuid and stores nothing twice', async t => {
  const payload = Buffer.alloc(4096, 7)
  const put = () => app.inject({
    method: 'PUT',
    url: '/api/2.0/drives/upload/img',
    headers: { authorization: alice.authorization, 'content-type': 'application/octet-stream', ...key('raw-1') },
    payload
  })
  const first = await put()
  t.equal(first.statusCode, 201, first.body)
  const before = await counts()
  const again = await put()
  t.equal(again.statusCode, 201)
  t.equal(again.headers['idempotent-replayed'], 'true')
  t.equal(again.body, first.body, 'the same drive uuid')
  t.equal(again.headers.location, first.headers.location)
  t.same(await counts(), before, 'no second drive or job')
})
