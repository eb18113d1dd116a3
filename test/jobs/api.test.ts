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
    const offsetObjects: unknown[] = []
    for (let offset = 0; offset < 30; offset += 7) {
      const res = await api.get(`/api/2.0/jobs/?order_by=${order}&limit=7&offset=${offset}`)
      byOffset.push(...uuids(res))
      offsetObjects.push(...res.json().objects)
    }
    const byCursor: string[] = []
    const cursorObjects: unknown[] = []
    let cursor = ''
    for (let page = 0; page < 10; page++) {
      const res = (await api.get(`/api/2.0/jobs/?order_by=${order}&limit=7&cursor=${cursor}`)).json()
      byCursor.push(...res.objects.map((o: any) => o.uuid))
      cursorObjects.push(...res.objects)
      t.equal(res.meta.total_count, 30)
      cursor = res.meta.next_cursor
      if (!cursor) break
    }
    t.equal(new Set(byCursor).size, 30, `${order}: every job once`)
    t.same(byCursor, byOffset, `${order}: same order as offset paging`)
    // the cursor path reads its trees apart from the offset path: the same objects, children included
    t.equal(JSON.stringify(cursorObjects), JSON.stringify(offsetObjects), `${order}: the same objects as offset paging`)
    t.ok(cursorObjects.some((o: any) => o.uuid === ids[5] && o.children.length === 1 && o.children[0].uuid === child), `${order}: with the nested child`)
  }
  const res = await api.get('/api/2.0/jobs/?cursor=garbage&limit=5')
  t.equal(res.statusCode, 400)
  t.equal(res.json()[0].error_point, 'cursor')
  t.equal((await api.get('/api/2.0/jobs/?order_by=state&cursor=')).statusCode, 400, 'keyset needs a date ordering')
  t.notOk('next_cursor' in (await api.get('/api/2.0/jobs/?limit=5')).json().meta, 'offset clients see the plain envelope')
})

t.test('keyset cursor paging keeps the microseconds: jobs of one millisecond each appear once, in every order', async t => {
  // PostgreSQL keeps the microsecond; a JS Date (and a cursor built from one) only the millisecond
  const carol = await createUser(app)
  const capi = client(app, carol)
  const micros = ['.123401', '.123402', '.123402', '.123403', '.123999', '.124000', '.122999', '.123405']
  const jobs: Array<{ id: string, created: string, lastModified: string }> = []
  for (let i = 0; i < micros.length; i++) {
    const id = randomUUID()
    // last_modified in the reverse order of created, so the two orders differ
    jobs.push({ id, created: `2026-01-01 00:00:00${micros[i]}+00`, lastModified: `2026-01-01 00:00:00${micros[micros.length - 1 - i]}+00` })
    await app.prisma.job.create({ data: { id, ownerId: carol.id, rootId: id, operation: 'drive_create', state: 'success' } })
    // a child job and another account's job at the same instants: never on carol's pages
    const kid = randomUUID()
    await app.prisma.job.create({ data: { id: kid, ownerId: carol.id, rootId: id, parentId: id, operation: 'drive_create', state: 'success' } })
    await app.prisma.job.create({ data: { id: randomUUID(), ownerId: bob.id, rootId: randomUUID(), operation: 'drive_create', state: 'success' } })
  }
  for (const j of jobs) {
    await app.prisma.$executeRaw`UPDATE jobs SET created = ${j.created}::timestamptz, last_modified = ${j.lastModified}::timestamptz WHERE root_id = ${j.id}::uuid OR owner_id = ${bob.id}::uuid`
  }
  const [row] = await app.prisma.$queryRaw<Array<{ n: number }>>`SELECT count(DISTINCT created)::int AS n FROM jobs WHERE owner_id = ${carol.id}::uuid AND parent_id IS NULL`
  t.equal(row.n, micros.length - 1, 'the microseconds are stored')
  // the expected order: the key to the microsecond, ties by id opposite to it
  const expected = (field: 'created' | 'lastModified', desc: boolean) => [...jobs].sort((a, b) =>
    a[field] === b[field] ? (desc ? (a.id < b.id ? -1 : 1) : (a.id < b.id ? 1 : -1)) : (a[field] < b[field] ? (desc ? 1 : -1) : (desc ? -1 : 1))).map(j => j.id)
  for (const [order, field] of [['last_modified', 'lastModified'], ['-last_modified', 'lastModified'], ['created', 'created'], ['-created', 'created']] as const) {
    for (const limit of [1, 2, 3]) {
      const seen: string[] = []
      const cursors = new Set<string>()
      let cursor = ''
      let pages = 0
      for (;;) {
        const res = await capi.get(`/api/2.0/jobs/?order_by=${order}&limit=${limit}&cursor=${encodeURIComponent(cursor)}`)
        t.equal(res.statusCode, 200)
        const body = res.json()
        seen.push(...body.objects.map((o: any) => o.uuid))
        t.equal(body.meta.total_count, jobs.length)
        pages++
        if (!body.meta.next_cursor || pages > jobs.length + 1) break
        t.notOk(cursors.has(body.meta.next_cursor), `${order} limit ${limit}: next_cursor moves forward`)
        cursors.add(body.meta.next_cursor)
        cursor = body.meta.next_cursor
      }
      t.ok(pages <= Math.ceil(jobs.length / limit) + 1, `${order} limit ${limit}: paging ends (${pages} pages)`)
      t.equal(new Set(seen).size, seen.length, `${order} limit ${limit}: no job twice`)
      t.same(seen, expected(field, order.startsWith('-')), `${order} limit ${limit}: every job once, in order`)
    }
  }
  // with a filter the cursor path compiles too (__contains), and /jobs/detail/ pages the same way
  const first = (await capi.get('/api/2.0/jobs/detail/?order_by=created&limit=5&cursor=&state__contains=success&operation=drive_create')).json()
  const rest = (await capi.get(`/api/2.0/jobs/detail/?order_by=created&limit=5&state__contains=success&operation=drive_create&cursor=${first.meta.next_cursor}`)).json()
  t.same([...uuids({ json: () => first }), ...uuids({ json: () => rest })], expected('created', false))
  t.equal(rest.meta.next_cursor, null)
  t.equal((await capi.get(`/api/2.0/jobs/?order_by=created&limit=5&cursor=${first.meta.next_cursor}&state=started`)).json().objects.length, 0)
  // a millisecond cursor (as earlier versions gave out) and keys that are no instant: 400, not 500
  const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url')
  for (const k of ['2026-01-01T00:00:00.123Z', '2026-02-31T00:00:00.000000Z', '2026-01-01T24:00:00.000000Z', '2026-01-01T00:00:00.1234567Z', '2026-01-01 00:00:00.123401+00', null]) {
    const res = await capi.get(`/api/2.0/jobs/?order_by=created&limit=1&cursor=${enc({ k, id: jobs[0].id })}`)
    t.equal(res.statusCode, 400, `cursor key ${k}`)
    t.equal(res.json()[0].error_point, 'cursor')
  }
})

t.test('default order is -last_modified', async t => {
  const first = (await api.get('/api/2.0/jobs/?limit=1')).json().objects[0]
  t.equal(first.uuid, ids[29])
})

t.test('a cursor page holds at most 1,000 jobs: limit=0 over 33,000 jobs pages on instead of failing', async t => {
  const dave = await createUser(app)
  const dapi = client(app, dave)
  // more ids than one statement's bind parameters (32,767) could carry
  await app.prisma.$executeRaw`
    INSERT INTO jobs (id, owner_id, root_id, operation, state)
    SELECT u, ${dave.id}::uuid, u, 'drive_create', 'success' FROM (SELECT gen_random_uuid() AS u FROM generate_series(1, 33000)) s`
  const first = await dapi.get('/api/2.0/jobs/?cursor=&limit=0')
  t.equal(first.statusCode, 200, 'limit=0 with a cursor answers')
  const body = first.json()
  t.equal(body.objects.length, 1000, 'the page holds 1,000 jobs')
  t.ok(body.meta.next_cursor, 'with a cursor to the next page')
  const second = (await dapi.get(`/api/2.0/jobs/?cursor=${encodeURIComponent(body.meta.next_cursor)}&limit=5000`)).json()
  t.equal(second.objects.length, 1000, 'a limit above 1,000 is 1,000 too')
  t.notOk(second.objects.some((o: any) => body.objects.some((p: any) => p.uuid === o.uuid)), 'the next page holds other jobs')
})
