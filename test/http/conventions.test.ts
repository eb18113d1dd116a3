// CloudSigma conventions shared by every route, exercised on the real app and database.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { buildTestApp, client, createUser } from '../helpers/app.ts'

const { app } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const bob = await createUser(app)
const api = client(app, alice)

async function addJobs (ownerId: string, n: number, fields: Partial<{ state: string, operation: string }> = {}) {
  const ids: string[] = []
  for (let i = 0; i < n; i++) {
    const id = randomUUID()
    ids.push(id)
    await app.prisma.job.create({
      data: {
        id,
        ownerId,
        rootId: id,
        operation: fields.operation ?? 'drive_clone',
        state: fields.state ?? 'success',
        lastModified: new Date(Date.UTC(2026, 0, 1, 0, 0, i)),
        created: new Date(Date.UTC(2026, 0, 1, 0, 0, i))
      }
    })
  }
  return ids
}

t.test('an empty list has the CloudSigma envelope with limit 20', async t => {
  const res = await api.get('/api/2.0/jobs/')
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /application\/json/)
  t.same(res.json(), { meta: { limit: 20, offset: 0, total_count: 0 }, objects: [] })
})

t.test('paths answer with and without the trailing slash', async t => {
  t.equal((await api.get('/api/2.0/jobs')).statusCode, 200)
  t.equal((await api.get('/api/2.0/jobs/?limit=5')).json().meta.limit, 5)
  t.equal((await api.get('/api/2.0/jobs?limit=5')).json().meta.limit, 5)
})

t.test('paging, limit=0, total_count, order_by and fields', async t => {
  const ids = await addJobs(alice.id, 25)
  await addJobs(bob.id, 3)
  const page = (await api.get('/api/2.0/jobs/')).json()
  t.equal(page.meta.total_count, 25, 'counts only this account\'s jobs')
  t.equal(page.objects.length, 20, 'default limit is 20')
  t.equal(page.objects[0].uuid, ids[24], 'newest last_modified first by default')
  const all = (await api.get('/api/2.0/jobs/?limit=0')).json()
  t.equal(all.meta.limit, 0)
  t.equal(all.objects.length, 25, 'limit=0 returns everything')
  const second = (await api.get('/api/2.0/jobs/?limit=10&offset=20&order_by=created')).json()
  t.same(second.meta, { limit: 10, offset: 20, total_count: 25 })
  t.same(second.objects.map((o: { uuid: string }) => o.uuid), ids.slice(20), 'ascending by created')
  const slim = (await api.get('/api/2.0/jobs/?limit=2&fields=uuid,state')).json()
  t.same(Object.keys(slim.objects[0]).sort(), ['state', 'uuid'], 'fields= keeps only the named keys')
  t.same(Object.keys(slim.meta).sort(), ['limit', 'offset', 'total_count'], 'the envelope is kept')
  const bad = await api.get('/api/2.0/jobs/?order_by=password')
  t.equal(bad.statusCode, 400)
  t.same(bad.json()[0].error_point, 'order_by')
})

t.test('filters: exact, comma-OR, repeated AND, comparisons, bad values', async t => {
  await addJobs(alice.id, 2, { state: 'error', operation: 'server_clone' })
  await addJobs(alice.id, 1, { state: 'cancelled', operation: 'drive_resize' })
  const count = async (q: string) => (await api.get('/api/2.0/jobs/?limit=0&' + q)).json().meta.total_count
  t.equal(await count('state=error'), 2)
  t.equal(await count('state=error,cancelled'), 3, 'commas OR alternatives')
  t.equal(await count('state=error,cancelled&operation=drive_resize'), 1, 'parameters AND')
  t.equal(await count('state=error&state=cancelled'), 0, 'a repeated parameter ANDs')
  t.equal(await count('created__lt=2026-01-01T00:00:05Z&state=success'), 5, 'date comparison')
  t.equal(await count('created__gte=2026-01-01T00:00:05Z&state=success'), 20)
  const bad = await api.get('/api/2.0/jobs/?state=sleeping')
  t.equal(bad.statusCode, 400)
  t.same(bad.json(), [{ error_type: 'validation', error_message: bad.json()[0].error_message, error_point: 'state' }])
  t.match(bad.json()[0].error_message, /sleeping/)
  t.equal((await api.get('/api/2.0/jobs/?created__lt=yesterday')).statusCode, 400)
  t.equal((await api.get('/api/2.0/jobs/?limit=-1')).statusCode, 400)
  t.equal((await api.get('/api/2.0/jobs/?limit=ten')).json()[0].error_point, 'limit')
})

t.test('numeric strings are accepted for integers', async t => {
  const res = await api.get('/api/2.0/jobs/?limit=3')
  t.equal(res.json().meta.limit, 3)
  t.type(res.json().meta.limit, 'number')
})

t.test('every response carries X-REQUEST-ID, and a sane client id is kept', async t => {
  const a = await api.get('/api/2.0/jobs/')
  t.match(a.headers['x-request-id'], /^[0-9a-f-]{36}$/)
  const b = await api.get('/api/2.0/jobs/', { 'x-request-id': 'my-trace-1' })
  t.equal(b.headers['x-request-id'], 'my-trace-1')
  const c = await app.inject({ method: 'GET', url: '/nothing/here' })
  t.ok(c.headers['x-request-id'], 'also on errors')
})

t.test('unknown routes are 404 notexist arrays', async t => {
  for (const url of ['/api/2.0/nothing/', '/nope']) {
    const res = await api.get(url)
    t.equal(res.statusCode, 404)
    t.same(res.json(), [{ error_type: 'notexist', error_message: 'Resource does not exist', error_point: null }])
  }
})

t.test('an unknown job and another account\'s job are both 404', async t => {
  const [bobs] = await addJobs(bob.id, 1)
  for (const id of [randomUUID(), bobs]) {
    const res = await api.get(`/api/2.0/jobs/${id}/`)
    t.equal(res.statusCode, 404)
    t.equal(res.json()[0].error_type, 'notexist')
  }
  t.equal((await client(app, bob).get(`/api/2.0/jobs/${bobs}/`)).statusCode, 200)
  const bad = await api.get('/api/2.0/jobs/not-a-uuid/')
  t.equal(bad.statusCode, 400)
  t.equal(bad.json()[0].error_point, 'uuid')
})

t.test('an Accept header the API cannot satisfy gets 406', async t => {
  t.equal((await api.get('/api/2.0/jobs/', { accept: 'text/html' })).statusCode, 406)
  t.equal((await api.get('/api/2.0/jobs/', { accept: 'application/json, text/plain' })).statusCode, 200)
  t.equal((await api.get('/api/2.0/jobs/', { accept: '*/*' })).statusCode, 200)
})

t.test('q-values count: a range with q=0 refuses its types (406); the most specific range decides', async t => {
  for (const accept of ['application/json;q=0', 'application/json; q=0', 'application/json;q=0.000', '*/*;q=0', 'application/*;q=0',
    'application/json;q=0, */*', 'text/html, application/json;q=0', 'application/json; charset=latin1']) {
    const res = await api.get('/api/2.0/jobs/', { accept })
    t.equal(res.statusCode, 406, accept)
    t.same(res.json(), [{ error_type: 'validation', error_message: 'Only application/json responses can be produced', error_point: null }], accept)
  }
  for (const accept of ['application/json;q=0.1', '*/*;q=0, application/json', 'text/html;q=1, */*;q=0.1', 'application/json; charset=UTF-8', 'APPLICATION/JSON']) {
    t.equal((await api.get('/api/2.0/jobs/', { accept })).statusCode, 200, accept)
  }
  t.equal((await api.get('/api/2.0/jobs/?format=json', { accept: 'application/json;q=0' })).statusCode, 200, '?format=json overrides Accept')
  // a route with a type of its own (the job log's text/plain) takes it even when JSON is refused
  const made = await api.post('/api/2.0/drives/', { name: 'accept', size: 1024, media: 'disk' })
  const job = made.json().objects[0].jobs[0].uuid
  t.equal((await api.get(`/api/2.0/jobs/${job}/log/`, { accept: 'text/plain, application/json;q=0' })).statusCode, 200, 'text/plain on the log')
  t.equal((await api.get(`/api/2.0/jobs/${job}/log/`, { accept: 'text/plain;q=0, application/json;q=0' })).statusCode, 406, 'neither')
})

t.test('the schema endpoint describes the resource', async t => {
  const res = await api.get('/api/2.0/jobs/schema/')
  t.equal(res.statusCode, 200)
  const s = res.json()
  t.same(s.allowed_list_http_methods, ['get'])
  t.equal(s.default_limit, 20)
  t.equal(s.fields.state.type, 'string')
  t.ok(s.fields.state.choices.includes('success'))
  t.equal(s.fields.children.type, 'list')
  t.same(s.ordering, ['-last_modified'])
})
