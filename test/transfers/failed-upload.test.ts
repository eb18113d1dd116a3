// An upload that fails in its request is undone, and its job records the failure, in one
// transaction. When that transaction cannot commit (here PostgreSQL refuses the drive's change, as
// an exhausted pool or a database outage would make it fail), nothing is recorded: the job stays
// started and is abandoned, so no drive is left uploading under a finished job. Its lease runs
// out and the worker that takes it over undoes the upload and records the failure.
import t from 'tap'
import { Writable } from 'node:stream'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { halfMade } from '../helpers/consistency.ts'
import { MiB, listen, randomImage, rawPutHeaders, uploadForm } from './helpers.ts'

let logged = ''
const logStream = new Writable({ write (chunk, _enc, cb) { logged += chunk.toString(); cb() } })
// a short lease, so the abandoned job is taken over within seconds; long enough that it is not
// taken over (its cleanup then refused too) before a loaded machine has looked at it
const { app } = await buildTestApp(t, { config: { driveMaxSize: 8 * MiB, jobLeaseSeconds: 8 }, logger: { level: 'warn', stream: logStream } })
const alice = await createUser(app)
const api = client(app, alice)
const base = await listen(app)

/**
 * PostgreSQL refuses `op` on the drive named `name` (a trigger; `also`: a further condition on
 * OLD and NEW), until the returned function drops it.
 */
async function refuse (op: 'DELETE' | 'UPDATE', name: string, also = 'true'): Promise<() => Promise<void>> {
  const fn = `refuse_${op.toLowerCase()}_${name.replace(/\W/g, '_')}`
  await app.prisma.$executeRawUnsafe(`CREATE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$`)
  await app.prisma.$executeRawUnsafe(`CREATE TRIGGER ${fn} BEFORE ${op} ON drives FOR EACH ROW WHEN (OLD.name = '${name}' AND ${also}) EXECUTE FUNCTION ${fn}()`)
  return async () => {
    await app.prisma.$executeRawUnsafe(`DROP TRIGGER ${fn} ON drives`)
    await app.prisma.$executeRawUnsafe(`DROP FUNCTION ${fn}()`)
  }
}

const jobOf = (jobId: string) => app.prisma.job.findUniqueOrThrow({ where: { id: jobId } })

t.test('a raw upload cut by its client, whose drive cannot be removed: the job is abandoned, then taken over and undone', async t => {
  const allow = await refuse('DELETE', 'cutraw')
  const sock = await rawPutHeaders(base, alice.authorization, 'cutraw', MiB)
  sock.write(randomImage(64 * 1024))
  const drive = await eventually(async () => (await app.prisma.drive.findFirst({ where: { ownerId: alice.id, name: 'cutraw' } })) ?? undefined)
  const jobId = drive.lockedByJob!
  sock.destroy()
  await eventually(async () => logged.includes('could not discard a failed upload'))
  t.match(await jobOf(jobId), { state: 'started' }, 'the failure is not recorded without the drive\'s removal')
  t.match(await app.prisma.drive.findUnique({ where: { id: drive.id } }), { status: 'uploading', lockedByJob: jobId }, 'the drive is still the job\'s')
  t.same(await halfMade(app.prisma), [], 'nothing half-made')
  await allow()
  const done = await eventually(async () => { const j = await jobOf(jobId); return j.state === 'error' && j }, { timeoutMs: 60_000 })
  t.match(done.error, { error_message: /could not renew its lease in time/ }, 'the worker that took it over recorded the failure')
  t.equal(await app.prisma.drive.count({ where: { id: drive.id } }), 0, 'and removed the drive')
  t.notOk(await app.storage.exists(drive.id), 'and its image')
  t.same(await halfMade(app.prisma), [], 'nothing half-made')
})

t.test('a multipart upload refused (empty file), whose drive cannot be removed: 400, the job abandoned, then taken over and undone', async t => {
  const allow = await refuse('DELETE', 'emptymp')
  const f = uploadForm({ name: 'emptymp' }, Buffer.alloc(0))
  const res = await app.inject({ method: 'POST', url: '/api/2.0/_upload/', headers: { authorization: alice.authorization, ...f.headers }, payload: f.payload })
  t.equal(res.statusCode, 400, res.body)
  t.match(res.json()[0], { error_type: 'validation', error_message: 'The file is empty' })
  const drive = await app.prisma.drive.findFirstOrThrow({ where: { ownerId: alice.id, name: 'emptymp' } })
  const jobId = drive.lockedByJob!
  t.match(await jobOf(jobId), { state: 'started' }, 'the failure is not recorded without the drive\'s removal')
  t.same(await halfMade(app.prisma), [], 'nothing half-made')
  await allow()
  const done = await eventually(async () => { const j = await jobOf(jobId); return j.state === 'error' && j }, { timeoutMs: 60_000 })
  t.match(done.error, { error_message: /could not renew its lease in time/ })
  t.equal(await app.prisma.drive.count({ where: { id: drive.id } }), 0, 'the worker that took it over removed the drive')
  t.same(await halfMade(app.prisma), [], 'nothing half-made')
})

t.test('an upload into a drive refused (wrong size), whose drive cannot be given back: 400, the job abandoned, then taken over and the drive given back', async t => {
  const created = await api.post('/api/2.0/drives/', { name: 'into', size: MiB, media: 'disk' })
  t.equal(created.statusCode, 201, created.body)
  const uuid = created.json().objects[0].uuid as string
  await eventually(async () => (await api.get(`/api/2.0/drives/${uuid}/`)).json().status === 'unmounted')
  // only the upload's end: the drive leaving `uploading`
  const allow = await refuse('UPDATE', 'into', "OLD.status = 'uploading' AND NEW.locked_by_job IS NULL")
  const f = uploadForm({ uuid }, randomImage(10))
  const res = await app.inject({ method: 'POST', url: '/api/2.0/_upload/', headers: { authorization: alice.authorization, ...f.headers }, payload: f.payload })
  t.equal(res.statusCode, 400, res.body)
  const drive = await app.prisma.drive.findUniqueOrThrow({ where: { id: uuid } })
  t.match(drive, { status: 'uploading' }, 'the drive could not be given back')
  const jobId = drive.lockedByJob!
  t.match(await jobOf(jobId), { state: 'started' }, 'so the failure is not recorded')
  t.same(await halfMade(app.prisma), [], 'nothing half-made')
  await allow()
  const done = await eventually(async () => { const j = await jobOf(jobId); return j.state === 'error' && j }, { timeoutMs: 60_000 })
  t.match(done.error, { error_message: /the process receiving it stopped/ }, 'the worker that took it over recorded the failure')
  t.match(await app.prisma.drive.findUniqueOrThrow({ where: { id: uuid } }), { status: 'unmounted', lockedByJob: null }, 'the worker that took it over gave the drive back')
  t.same(await halfMade(app.prisma), [], 'nothing half-made')
})
