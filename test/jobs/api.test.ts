// The jobs list: filters (resource, parent, last_modified, finished_at), order_by, keyset cursor
// paging next to offset paging, nested children, and the schema endpoint.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { buildTestApp, client, createUser } from '../helpers/app.ts'

const { app } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const bob = await createUser(app)
const api = client(app, alice)

const drive = randomUUID()
const ids: string[] = []
for (let i = 0; i < 30; i++) {
  const id = randomUUID()
  ids.push(id)
  const at = new Date(Date.UTC(2026, 0, 1, 0, 0, i % 10 === 0 ? 0 : i)) // some equal timestamps: the tiebreak matters
  await app.prisma.job.create({
    data: {
      id,
      ownerId: alice.id,
      rootId: id,
      operation: i % 2 ? 'drive_clone' : 'server_clone',
      state: i < 25 ? 'success' : 'started',
      created: at,
      lastModified: at,
      finishedAt: i < 25 ? at : null,
      ...(i % 3 === 0 ? { resources: [`/api/2.0/drives/${drive}/`], links: { create: [{ resourceType: 'drives', resourceId: drive }] } } : {})
    }
  })
}
const child = randomUUID()
await app.prisma.job.create({ data: { id: child, ownerId: alice.id, rootId: ids[5], parentId: ids[5], operation: 'drive_clone', state: 'success' } })
await app.prisma.job.create({ data: { id: randomUUID(), ownerId: bob.id, rootId: randomUUID(), operation: 'drive_clone', state: 'success', links: { create: [{ resourceType: 'drives', resourceId: drive }] } } })

const uuids = (res: any) => res.json().objects.map((o: any) => o.uuid)

t.test('filters: resource, parent, last_modified and finished_at comparisons', async t => {
  const byResource = (await api.get(`/api/2.0/jobs/?resource=${drive}&limit=0`)).json()
  t.equal(byResource.meta.total_count, 10, 'jobs touching the drive, this account only')
  t.ok(byResource.objects.every((o: any) => o.resources.includes(`/api/2.0/drives/${drive}/`)))
  t.same(uuids(await api.get(`/api/2.0/jobs/?parent=${ids[5]}`)), [child], 'children by parent')
  t.equal((await api.get('/api/2.0/jobs/?last_modified__gte=2026-01-01T00:00:25Z&limit=0')).json().meta.total_count, 5)
  t.equal((await api.get('/api/2.0/jobs/?finished_at__lt=2026-01-01T00:00:05Z&limit=0')).json().meta.total_count, 7)
  t.equal((await api.get('/api/2.0/jobs/?state=started&operation=drive_clone&limit=0')).json().meta.total_count, 3)
  t.equal((await api.get('/api/2.0/jobs/?resource=nope')).statusCode, 400)
})

t.test('nested children and fields on a single job', async t => {
  const job = (await api.get(`/api/2.0/jobs/${ids[5]}/`)).json()
  t.equal(job.children[0].uuid, child)
  t.same(job.children[0].parent, { resource_uri: `/api/2.0/jobs/${ids[5]}/`, uuid: ids[5] })
  t.same((await api.get(`/api/2.0/jobs/${ids[5]}/?fields=uuid,state`)).json(), { uuid: ids[5], state: 'success' })
})

t.test('keyset cursor paging returns every job once, in the same order as offset paging', async t => {
  for (const order of ['-last_modified', 'created', '-created']) {
    const byOffset: string[] = []
    for (let offset = 0; offset < 30; offset += 7) byOffset.push(...uuids(await api.get(`/api/2.0/jobs/?order_by=${order}&limit=7&offset=${offset}`)))
    const byCursor: string[] = []
    let cursor = ''
    for (let page = 0; page < 10; page++) {
      const res = (await api.get(`/api/2.0/jobs/?order_by=${order}&limit=7&cursor=${cursor}`)).json()
      byCursor.push(...res.objects.map((o: any) => o.uuid))
      t.equal(res.meta.total_count, 30)
      cursor = res.meta.next_cursor
      if (!cursor) break
    }
    t.equal(new Set(byCursor).size, 30, `${order}: every job once`)
    t.same(byCursor, byOffset, `${order}: same order as offset paging`)
  }
  const res = await api.get('/api/2.0/jobs/?cursor=garbage&limit=5')
  t.equal(res.statusCode, 400)
  t.equal(res.json()[0].error_point, 'cursor')
  t.equal((await api.get('/api/2.0/jobs/?order_by=state&cursor=')).statusCode, 400, 'keyset needs a date ordering')
  t.notOk('next_cursor' in (await api.get('/api/2.0/jobs/?limit=5')).json().meta, 'offset clients see the plain envelope')
})

t.test('default order is -last_modified', async t => {
  const first = (await api.get('/api/2.0/jobs/?limit=1')).json().objects[0]
  t.equal(first.uuid, ids[29])
})
