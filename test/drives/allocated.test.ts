// runtime.allocated_size (an extension of the CloudSigma drive object): the bytes a drive's image
// takes on storage, far below `size` for a sparse image, cached in the drive row and measured
// again when a job changes the drive.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { refreshAllocated } from '../../src/features/drives/allocated.ts'

const MiB = 1024 * 1024
// rbd allocates whole objects (4 MiB) and a clone holds its own data only once flattened
const rbd = process.env.STORAGE === 'rbd'
const granule = rbd ? 4 * MiB : 0
const { app } = await buildTestApp(t)
const user = await createUser(app)
const api = client(app, user)

async function waitJob (uuid: string): Promise<any> {
  const job = (await api.get(`/api/2.0/jobs/${uuid}/?wait=30`)).json()
  if (job.state !== 'success') throw new Error(`job ${uuid} is ${job.state}`)
  return job
}

t.test('a sparse drive with 1 MiB written reports about 1 MiB allocated, in detail, lists and its clone', async t => {
  const created = (await api.post('/api/2.0/drives/', { name: 'sparse', size: 64 * MiB, media: 'disk' })).json().objects[0]
  t.equal(created.runtime.allocated_size, null, 'not measured while the drive is only a row')
  await waitJob(created.jobs[0].uuid)

  // 1 MiB of real bytes in the middle of the image (the rest stays a hole)
  const writer = await app.storage.openForWrite(created.uuid)
  await writer.write(randomBytes(MiB), 8 * MiB)
  await writer.close()

  const drive = (await api.get(`/api/2.0/drives/${created.uuid}/`)).json()
  t.equal(drive.size, 64 * MiB)
  const allocated = drive.runtime.allocated_size
  t.ok(allocated >= MiB, `at least the 1 MiB written is allocated (${allocated})`)
  t.ok(allocated < 4 * MiB + granule, `far below the 64 MiB size (${allocated})`)
  const row = await app.prisma.drive.findUniqueOrThrow({ where: { id: created.uuid } })
  t.equal(Number(row.allocatedSize), allocated, 'the figure is kept in the drive row')
  t.ok(row.allocatedAt, 'with the version it was measured at')

  const listed = (await api.get('/api/2.0/drives/detail/')).json().objects.find((d: { uuid: string }) => d.uuid === created.uuid)
  t.equal(listed.runtime.allocated_size, allocated, 'the detail list shows it')

  // the clone is read while it is being copied, then again after its job: measured again then
  const clone = (await api.post(`/api/2.0/drives/${created.uuid}/action/?do=clone`, { name: 'sparse-clone' })).json().objects[0]
  await api.get(`/api/2.0/drives/${clone.uuid}/`)
  await waitJob(clone.jobs[0].uuid)
  const copied = await eventually(async () => {
    const d = (await api.get(`/api/2.0/drives/${clone.uuid}/`)).json()
    // on rbd: measured again once its flatten (a child job) has given it its own data
    return d.status === 'unmounted' && d.runtime.allocated_size >= MiB ? d : undefined
  }, { timeoutMs: 60_000, intervalMs: 200 })
  t.ok(copied.runtime.allocated_size >= MiB, `the clone holds the copied MiB (${copied.runtime.allocated_size})`)
  t.ok(copied.runtime.allocated_size < 4 * MiB + granule, 'and stays sparse')
})

t.test('a resize is measured again after its job', async t => {
  const created = (await api.post('/api/2.0/drives/', { name: 'grow', size: 4 * MiB, media: 'disk' })).json().objects[0]
  await waitJob(created.jobs[0].uuid)
  const before = (await api.get(`/api/2.0/drives/${created.uuid}/`)).json()
  t.type(before.runtime.allocated_size, 'number', 'measured once the drive exists')
  const cached = await app.prisma.drive.findUniqueOrThrow({ where: { id: created.uuid } })

  const resized = (await api.post(`/api/2.0/drives/${created.uuid}/action/?do=resize`, { ...before, size: 8 * MiB })).json().objects[0]
  await waitJob(resized.jobs[0].uuid)
  await eventually(async () => (await api.get(`/api/2.0/drives/${created.uuid}/`)).json().status === 'unmounted')
  const after = await app.prisma.drive.findUniqueOrThrow({ where: { id: created.uuid } })
  t.ok(after.allocatedAt! > cached.allocatedAt!, 'the end of the resize made the cached figure stale, and a read measured it again')
})

t.test('a figure measured for an older version of the row never replaces a newer one', async t => {
  const created = (await api.post('/api/2.0/drives/', { name: 'versions', size: 4 * MiB, media: 'disk' })).json().objects[0]
  await waitJob(created.jobs[0].uuid)
  const old = await app.prisma.drive.findUniqueOrThrow({ where: { id: created.uuid } })
  // the row changes (a rename) and a read measures its new version
  t.equal((await api.put(`/api/2.0/drives/${created.uuid}/`, { name: 'versions 2' })).statusCode, 200)
  await api.get(`/api/2.0/drives/${created.uuid}/`)
  const fresh = await app.prisma.drive.findUniqueOrThrow({ where: { id: created.uuid } })
  t.same(fresh.allocatedAt, fresh.updatedAt, 'measured for the renamed row')
  t.ok(fresh.updatedAt > old.updatedAt)
  // a measurement of the old version (a read that gave up waiting for it) comes back only now
  await refreshAllocated(app.dbPool, app.storage, [{ ...old, allocatedAt: null }])
  const after = await app.prisma.drive.findUniqueOrThrow({ where: { id: created.uuid } })
  t.same(after.allocatedAt, fresh.allocatedAt, 'the newer figure stays')
})

t.test('a row another transaction holds is skipped, not waited for: its figure is stored by a later read', async t => {
  const ids: string[] = []
  for (const name of ['held', 'free']) {
    const created = (await api.post('/api/2.0/drives/', { name, size: 4 * MiB, media: 'disk' })).json().objects[0]
    await waitJob(created.jobs[0].uuid)
    ids.push(created.uuid)
  }
  // both figures missing, as for a drive never read
  await app.prisma.drive.updateMany({ where: { id: { in: ids } }, data: { allocatedSize: null, allocatedAt: null } })
  const rows = async () => Promise.all(ids.map(async id => app.prisma.drive.findUniqueOrThrow({ where: { id } })))
  const [held, free] = await rows()

  // another transaction (a job's finish, another read's update) holds the first row
  const holder = await app.dbPool.connect()
  t.teardown(() => holder.release())
  await holder.query('BEGIN')
  await holder.query('SELECT 1 FROM drives WHERE id = $1::uuid FOR NO KEY UPDATE', [held.id])
  // a read that would wait a minute for its figures to be stored: before, it waited on the held
  // row's lock until the holder ended (two such reads of the same rows deadlocked)
  const refresh = refreshAllocated(app.dbPool, app.storage, [held, free], 60_000).then(() => 'done' as const)
  const outcome = await Promise.race([refresh, new Promise(resolve => setTimeout(resolve, 10_000, 'waited'))])
  t.equal(outcome, 'done', 'the read was answered while the row was still held')
  t.type(held.allocatedSize, 'bigint', 'with the figures it measured, the held row\'s too')
  const [heldAfter, freeAfter] = await rows()
  t.equal(freeAfter.allocatedAt?.getTime(), free.updatedAt.getTime(), 'the free row\'s figure is stored')
  t.equal(heldAfter.allocatedAt, null, 'the held row is left as it was')
  await holder.query('COMMIT')

  // stale still, so the next read measures it again and stores it
  const [again] = await rows()
  await refreshAllocated(app.dbPool, app.storage, [again])
  const [stored] = await rows()
  t.equal(stored.allocatedAt?.getTime(), stored.updatedAt.getTime(), 'a later read stored the held row\'s figure')
  t.equal(stored.allocatedSize, held.allocatedSize, 'the same figure')
})
