// The typed raw SQL reads (issue 18) against the Prisma reads they replace, on a varied fixture:
// the same wire output to the byte (key order included), and total_count exact up to 10,000
// matches, then an estimate flagged in meta.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { listDrives, loadDriveWire } from '../../src/features/drives/service.ts'
import { getDriveWireSql, readDrives } from '../../src/features/drives/read-sql.ts'
import { listServers, loadServerWire } from '../../src/features/servers/service.ts'
import { getServerWireSql, readServers } from '../../src/features/servers/read-sql.ts'
import { loadJobWire, loadTrees } from '../../src/features/jobs/view.ts'
import { getJobWireSql, listJobsSql } from '../../src/features/jobs/read-sql.ts'
import { jobFilters, jobOrder, keysetOf } from '../../src/features/jobs/routes.ts'
import { planList } from '../../src/http/listing.ts'
import { JOB_FIELDS } from '../../src/features/jobs/schemas.ts'
import { EXACT_COUNT_UP_TO } from '../../src/http/list-sql.ts'

const { app } = await buildTestApp(t)
const alice = await createUser(app)
const bob = await createUser(app)
const api = client(app, alice)
// a query string as the route's schema coerces it
const parse = (q: string): Record<string, unknown> => Object.fromEntries([...new URLSearchParams(q)].map(([k, v]) => [k, k === 'limit' || k === 'offset' ? Number(v) : v]))
// fixture checks throw: a top-level assertion would let tap end the root test early
function must (cond: boolean, what: string): void { if (!cond) throw new Error(`fixture: ${what}`) }
const same = (t: { equal: (a: unknown, b: unknown, m: string) => unknown }, a: unknown, b: unknown, msg: string) => t.equal(JSON.stringify(a), JSON.stringify(b), msg)

// drives of every kind: tags, meta, affinities, iops, cdrom, multimount; one of bob's
const tag = randomUUID()
const made = await api.post('/api/2.0/drives/', {
  objects: [
    { name: 'b-disk', size: 1024 ** 3, media: 'disk', tags: [tag], meta: { k: 'v', 'a b': 'ü' }, affinities: ['ssd'], iops: 500 },
    { name: 'a-cd', size: 2 * 1024 ** 2, media: 'cdrom', allow_multimount: true },
    { name: 'c-disk', size: 4096, media: 'disk' },
    { name: 'c-disk', size: 8192, media: 'disk', tags: [tag] }
  ]
})
must(made.statusCode === 201, made.body)
const drives: string[] = made.json().objects.map((d: { uuid: string }) => d.uuid)
await client(app, bob).post('/api/2.0/drives/', { name: 'bobs', size: 4096, media: 'disk' })
await eventually(async () => (await app.prisma.drive.count({ where: { status: 'creating' } })) === 0, { timeoutMs: 60_000 })
// servers: one mounting three drives with nics and meta, one empty; a resize job on a drive
const srv = await api.post('/api/2.0/servers/', {
  name: 'web',
  cpu: 2000,
  mem: 1024 ** 3,
  vnc_password: 'pw',
  meta: { role: 'web' },
  tags: [tag],
  nics: [{ model: 'virtio', ip_v4_conf: { conf: 'dhcp' } }],
  drives: [{ device: 'virtio', dev_channel: '0:1', drive: drives[0] }, { device: 'ide', dev_channel: '0:0', drive: drives[1], boot_order: 1 }, { device: 'virtio', dev_channel: '0:0', drive: drives[2] }]
})
must(srv.statusCode === 201, srv.body)
must((await api.post('/api/2.0/servers/', { name: 'empty', cpu: 1000, mem: 512 * 1024 ** 2, vnc_password: 'x' })).statusCode === 201, 'server')
must((await api.put(`/api/2.0/drives/${drives[3]}/`, { name: 'c-disk', size: 16384, media: 'disk' })).statusCode === 200, 'resize')
// a job tree with every optional field, timestamps with microseconds
const root = randomUUID()
const kids = [randomUUID(), randomUUID()]
await app.prisma.$executeRawUnsafe(`INSERT INTO jobs (id, owner_id, operation, state, root_id, resources, description, bytes_total, bytes_done, eta_seconds, result, error, created, last_modified, started_at, finished_at)
  VALUES ($1, $2, 'drive_clone', 'started', $1, ARRAY['/api/2.0/drives/${drives[0]}/'], 'cloning', 1000, 10, 7, '{"sha256":"x"}', NULL, now() - interval '1.123456 s', now() - interval '0.000999 s', now(), NULL)`, root, alice.id)
for (const [i, id] of kids.entries()) {
  await app.prisma.$executeRawUnsafe(`INSERT INTO jobs (id, owner_id, operation, state, parent_id, root_id, bytes_total, bytes_done, error, created, finished_at)
    VALUES ($1, $2, 'drive_create', $3, $4, $4, 600, 300, $5::jsonb, now() - interval '0.5 s', now())`, id, alice.id, i === 0 ? 'success' : 'error', root, i === 0 ? null : '{"error_type":"backend","error_message":"x","error_point":null}')
}
await eventually(async () => (await app.prisma.job.count({ where: { state: { in: ['queued', 'started'] }, NOT: { id: root } } })) === 0, { timeoutMs: 60_000 })

t.test('drive lists and gets: SQL and Prisma give the same bytes', async t => {
  const queries = ['', 'limit=2&offset=1', 'order_by=-size', 'order_by=name,-uuid', 'status=unmounted,mounted', 'status=resizing', `tag=${tag}`, 'media=cdrom',
    'fields=uuid,name,jobs,mounted_on', 'limit=0', 'offset=100', `uuid=${drives[1]},${drives[2]}`, 'storage_type=dssd&media=disk']
  for (const q of queries) {
    const query = parse(q)
    for (const detail of [false, true]) {
      same(t, await readDrives(app.dbPool, app.prisma, alice.id, { ...query }, detail), await listDrives(app.prisma, alice.id, { ...query }, detail), `${detail ? 'detail' : 'list'} ?${q}`)
    }
  }
  for (const id of drives) same(t, await getDriveWireSql(app.dbPool, alice.id, id), await loadDriveWire(app.prisma, alice.id, id), `drive ${id}`)
  const full = await getDriveWireSql(app.dbPool, alice.id, drives[0])
  t.equal(full.mounted_on.length, 1, 'the fixture has mounts')
  t.ok(full.jobs.length >= 1, 'and jobs')
  await t.rejects(getDriveWireSql(app.dbPool, bob.id, drives[0]), 'another account sees a 404')
})

t.test('server lists and gets: SQL and Prisma give the same bytes', async t => {
  for (const q of ['', 'order_by=-name', 'status=stopped', `tag=${tag}`, 'fields=uuid,drives,jobs', 'limit=1&offset=1']) {
    const query = parse(q)
    for (const detail of [false, true]) {
      same(t, await readServers(app.dbPool, app.prisma, alice.id, { ...query }, detail), await listServers(app.prisma, alice.id, { ...query }, detail), `${detail ? 'detail' : 'list'} ?${q}`)
    }
  }
  const id = srv.json().objects[0].uuid
  // a running server: the short list's runtime (active_since, the nics' runtime) from its own columns
  const started = await api.post(`/api/2.0/servers/${id}/action/?do=start`, {})
  t.ok(started.statusCode < 300, `started (${started.statusCode})`)
  await eventually(async () => (await app.prisma.server.findUnique({ where: { id } }))?.status === 'running', { timeoutMs: 30_000 })
  for (const q of ['', 'status=running']) {
    const list = await readServers(app.dbPool, app.prisma, alice.id, parse(q), false)
    same(t, list, await listServers(app.prisma, alice.id, parse(q), false), `list of a running server ?${q}`)
    t.ok(list.objects.some(o => o.runtime !== null && typeof o.runtime?.active_since === 'string'), 'a runtime is shown')
  }
  same(t, await getServerWireSql(app.dbPool, alice.id, id), await loadServerWire(app.prisma, alice.id, id), 'the server with mounts, nics and jobs')
  t.equal((await getServerWireSql(app.dbPool, alice.id, id))?.drives.length, 3)
  t.equal(await getServerWireSql(app.dbPool, bob.id, id), undefined, 'not another account\'s')
})

t.test('job lists and gets: SQL and Prisma give the same bytes', async t => {
  for (const q of ['', 'order_by=created', 'state=started', `resource=${drives[0]}`, `parent=${root}`, 'operation=drive_create&limit=2&offset=1', 'created__gte=2000-01-01T00:00:00.000Z', 'fields=uuid,children', 'offset=500', 'state=cancelled', 'limit=0']) {
    const query = parse(q)
    const plan = planList(query, jobFilters, jobOrder, JOB_FIELDS)
    keysetOf(plan) // the route's id tiebreak, opposite to a date order
    const sql = await listJobsSql(app.dbPool, alice.id, query, plan, jobFilters)
    const where = { ...plan.where, ownerId: alice.id, ...(query.parent === undefined ? { parentId: null } : {}) }
    const rows = await app.prisma.job.findMany({ where, orderBy: plan.orderBy, skip: plan.offset, take: plan.take })
    const objects = (await loadTrees(app.prisma, rows)).map(o => plan.fields ? Object.fromEntries(plan.fields.filter(f => f in o).map(f => [f, (o as Record<string, unknown>)[f]])) : o)
    same(t, sql, { meta: { limit: plan.limit, offset: plan.offset, total_count: await app.prisma.job.count({ where }) }, objects }, `?${q}`)
  }
  const ids = (await app.prisma.job.findMany({ where: { ownerId: alice.id }, select: { id: true } })).map(j => j.id)
  for (const id of ids) same(t, await getJobWireSql(app.dbPool, alice.id, id), await loadJobWire(app.prisma, alice.id, id), `job ${id}`)
  t.equal((await getJobWireSql(app.dbPool, alice.id, root))?.children.length, 2, 'the tree is nested')
  t.equal(await getJobWireSql(app.dbPool, bob.id, root), undefined, 'not another account\'s')
})

t.test(`total_count is exact up to ${EXACT_COUNT_UP_TO} matches of a filter, then an estimate flagged in meta; unfiltered, exact at any size`, async t => {
  const carol = await createUser(app)
  const seed = (n: number, state: string) => app.prisma.$executeRawUnsafe(`INSERT INTO jobs (id, owner_id, operation, state, root_id)
    SELECT u, $1::uuid, 'drive_create', $2, u FROM (SELECT gen_random_uuid() AS u FROM generate_series(1, $3::int)) g`, carol.id, state, n)
  await seed(EXACT_COUNT_UP_TO, 'success')
  await app.prisma.$executeRawUnsafe('ANALYZE jobs')
  const c = client(app, carol)
  let meta = (await c.get('/api/2.0/jobs/?limit=5')).json().meta
  t.same(meta, { limit: 5, offset: 0, total_count: EXACT_COUNT_UP_TO }, 'exactly at the threshold: exact, no flag')
  await seed(50, 'error')
  await app.prisma.$executeRawUnsafe('ANALYZE jobs')
  meta = (await c.get('/api/2.0/jobs/?limit=5&offset=10&operation=drive_create')).json().meta
  t.equal(meta.total_count_estimated, true, 'a filter matching more: flagged')
  t.ok(meta.total_count > EXACT_COUNT_UP_TO, `an estimate above the threshold (${meta.total_count as number})`)
  t.ok(Math.abs(meta.total_count - (EXACT_COUNT_UP_TO + 50)) < 2000, 'near the truth after ANALYZE')
  t.same((await c.get('/api/2.0/jobs/?limit=5&offset=10')).json().meta, { limit: 5, offset: 10, total_count: EXACT_COUNT_UP_TO + 50 },
    'unfiltered: the account\'s top-level jobs, from their counters: exact beyond the threshold, no flag')
  t.same((await c.get('/api/2.0/jobs/?limit=5&state=error')).json().meta, { limit: 5, offset: 0, total_count: 50 }, 'a filter under the threshold is exact again')
  t.equal((await c.get('/api/2.0/jobs/?limit=5&offset=20000')).json().objects.length, 0, 'a page past the end is empty')
})
