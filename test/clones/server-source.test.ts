// Issue 15: a server clone holds only the source drives (cloning_src), not the source server: its
// definition can be edited and deleted right after the clone request, and the clone still ends
// with its own copies of the disks. Workers are started by the test, so the clone is held queued.
import t from 'tap'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { MiB, driveStatus, finishedJob, pollingWorker, readyDrive, sha256, writeRandom } from './helpers.ts'

const { app } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const api = client(app, alice)

t.test('the source server is editable and deletable while its clone runs; only its disks are cloning_src', async t => {
  const setup = pollingWorker(app)
  const root = await readyDrive(api, { name: 'src-root', size: 32 * MiB })
  const iso = await readyDrive(api, { name: 'src-iso', size: 4 * MiB, media: 'cdrom' })
  await writeRandom(app, root.uuid, 0, 4 * MiB)
  await setup.stop()
  const created = await api.post('/api/2.0/servers/', {
    name: 'src',
    cpu: 1000,
    mem: 536870912,
    vnc_password: 'secret',
    drives: [
      { device: 'virtio', dev_channel: '0:0', drive: root.uuid, boot_order: 1 },
      { device: 'ide', dev_channel: '0:1', drive: iso.uuid }
    ]
  })
  t.equal(created.statusCode, 201, created.body)
  const source = created.json().objects[0]

  const cloned = await api.post(`/api/2.0/servers/${source.uuid}/action/?do=clone`, { name: 'copy' })
  t.equal(cloned.statusCode, 202, cloned.body)
  const copy = cloned.json()
  t.equal(await driveStatus(api, root.uuid), 'cloning_src', 'the source disk is held')

  const put = await api.put(`/api/2.0/servers/${source.uuid}/`, { name: 'src-renamed', cpu: 2000, drives: [] })
  t.equal(put.statusCode, 200, `full edit of the source server: ${put.body}`)
  t.equal(put.json().cpu, 2000)
  const del = await api.delete(`/api/2.0/servers/${source.uuid}/`)
  t.equal(del.statusCode, 204, `delete of the source server: ${del.body}`)
  t.equal((await api.get(`/api/2.0/servers/${source.uuid}/`)).statusCode, 404)
  t.equal(await driveStatus(api, root.uuid), 'cloning_src', 'the disk is still read by the clone')
  t.equal((await api.delete(`/api/2.0/drives/${root.uuid}/`)).statusCode, 503, 'the source disk itself stays busy')

  const run = pollingWorker(app)
  t.teardown(() => run.stop())
  const job = await finishedJob(api, copy.jobs[0].uuid)
  t.equal(job.state, 'success')
  const after = (await api.get(`/api/2.0/servers/${copy.uuid}/`)).json()
  const [newRoot, cd] = after.drives.map((d: any) => d.drive.uuid)
  t.not(newRoot, root.uuid)
  t.equal(cd, iso.uuid, 'the shared cdrom stays on the clone')
  t.equal(await driveStatus(api, newRoot), 'mounted')
  t.equal(await driveStatus(api, root.uuid), 'unmounted', 'the source disk is released, no longer mounted anywhere')
  t.equal(await sha256(app, newRoot), await sha256(app, root.uuid), 'the data was copied')
})
