// Issue 15: POST /_upload/ with `uuid` in data uploads into that existing drive: the file must be
// exactly the drive's size; the drive's data is replaced only by a complete file, otherwise it
// stays as it was; busy drives are 503, drives on running servers 400, others' drives 404.
import t from 'tap'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { MiB, driveContents, randomImage, sha256, uploadForm } from './helpers.ts'

const { app } = await buildTestApp(t, { config: { driveMaxSize: 8 * MiB } })
const alice = await createUser(app)
const bob = await createUser(app)
const api = client(app, alice)

const form = uploadForm

const send = (user: typeof alice, f: ReturnType<typeof form>) =>
  app.inject({ method: 'POST', url: '/api/2.0/_upload/', headers: { authorization: user.authorization, ...f.headers }, payload: f.payload })

async function readyDrive (size: number): Promise<string> {
  const res = await api.post('/api/2.0/drives/', { name: 'target', size, media: 'disk' })
  const uuid = res.json().objects[0].uuid
  await eventually(async () => (await api.get(`/api/2.0/drives/${uuid}/`)).json().status === 'unmounted' || undefined)
  return uuid
}

const contents = (uuid: string) => driveContents(app, api, uuid)

t.test('a file of exactly the drive size replaces its data; one drive_upload job; no new drive', async t => {
  const uuid = await readyDrive(2 * MiB)
  const drivesBefore = await app.prisma.drive.count()
  const bytes = randomImage(2 * MiB)
  const res = await send(alice, form({ uuid }, bytes))
  t.equal(res.statusCode, 200, res.body)
  const job = (await api.get(`/api/2.0/jobs/${res.json().job_id}/`)).json()
  t.match(job, { operation: 'drive_upload', state: 'success' })
  t.match(job.data.description, /^received 2\.0 MiB into the drive in \d+\.\d s$/, 'the finished job says what was done')
  t.same(job.resources, [`/api/2.0/drives/${uuid}/`], 'the job names the existing drive')
  const row = await app.prisma.job.findUniqueOrThrow({ where: { id: job.uuid } })
  t.same(row.result, { sha256: sha256(bytes), bytes: bytes.length })
  t.equal(await app.prisma.drive.count(), drivesBefore, 'no drive was created')
  const drive = (await api.get(`/api/2.0/drives/${uuid}/`)).json()
  t.match(drive, { status: 'unmounted', size: 2 * MiB, name: 'target' })
  t.ok((await contents(uuid)).equals(bytes), 'the drive holds the file')
})

t.test('a file of another size is 400 at file and the drive keeps its data and status', async t => {
  const uuid = await readyDrive(1 * MiB)
  const original = randomImage(1 * MiB)
  t.equal((await send(alice, form({ uuid }, original))).statusCode, 200)
  for (const [what, file] of [['smaller', randomImage(MiB - 1)], ['larger', randomImage(MiB + 4096)]] as const) {
    const res = await send(alice, form({ uuid }, file))
    t.equal(res.statusCode, 400, `${what}: ${res.body}`)
    t.equal(res.json()[0].error_point, 'file')
    const drive = (await api.get(`/api/2.0/drives/${uuid}/`)).json()
    t.equal(drive.status, 'unmounted', `${what}: back to its status`)
    t.ok((await contents(uuid)).equals(original), `${what}: the data is as it was`)
    const failed = await app.prisma.job.findFirstOrThrow({ where: { operation: 'drive_upload', links: { some: { resourceId: uuid } } }, orderBy: { created: 'desc' } })
    t.equal(failed.state, 'error', `${what}: its job failed`)
  }
})

t.test('busy, running-server and foreign drives are refused before anything is written', async t => {
  const creating = (await api.post('/api/2.0/drives/', { name: 'new', size: MiB, media: 'disk' })).json().objects[0].uuid
  await app.prisma.drive.update({ where: { id: creating }, data: { status: 'resizing' } })
  const busy = await send(alice, form({ uuid: creating }, randomImage(MiB)))
  t.equal(busy.statusCode, 503, busy.body)
  await app.prisma.drive.update({ where: { id: creating }, data: { status: 'unmounted' } })

  const mounted = await readyDrive(MiB)
  const server = await api.post('/api/2.0/servers/', { name: 's', cpu: 1000, mem: 536870912, vnc_password: 'x', drives: [{ device: 'virtio', dev_channel: '0:0', drive: mounted }] })
  await app.prisma.server.update({ where: { id: server.json().objects[0].uuid }, data: { status: 'running', activeSince: new Date() } })
  const running = await send(alice, form({ uuid: mounted }, randomImage(MiB)))
  t.equal(running.statusCode, 400, running.body)
  t.equal(running.json()[0].error_point, 'status')
  t.equal((await api.get(`/api/2.0/drives/${mounted}/`)).json().status, 'mounted')

  const mine = await readyDrive(MiB)
  const foreign = await send(bob, form({ uuid: mine }, randomImage(MiB)))
  t.equal(foreign.statusCode, 404, "another account's drive does not exist for bob")
  const bad = await send(alice, form({ uuid: 'not-a-uuid' }, randomImage(MiB)))
  t.equal(bad.statusCode, 400)
  t.equal(bad.json()[0].error_point, 'uuid')
})
