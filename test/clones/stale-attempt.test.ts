// A stale attempt of drive_clone or server_clone (its job was taken over by a newer attempt while
// its settle waited for a row) settles nothing: not the destination, the source's reader or the new
// server; the newer attempt then does (test/helpers/takeover.ts). An attempt held up inside its
// fenced rename past its lease puts nothing in place (the storage's guard).
import { randomBytes, randomUUID } from 'node:crypto'
import t from 'tap'
import { enqueueJob, newJobId } from '../../src/engine/enqueue.ts'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { appHandlers, holdThread, startEngine, waitForJob } from '../helpers/jobs.ts'
import { jobRow, runStale, TAKEN_BY } from '../helpers/takeover.ts'
import { GiB, readyDrive } from './helpers.ts'
import { memoryLogger } from '../helpers/log.ts'
import { copiesHeldInFence } from '../helpers/gate.ts'
import { readAll } from '../storage/contract.ts'
import { driveCloneHandler } from '../../src/features/clones/handlers/drive-clone.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const api = client(app, alice)
const drive = (id: string) => app.prisma.drive.findUniqueOrThrow({ where: { id } })

t.test('drive_clone: a stale attempt does not settle the clone; the newer one does', async t => {
  const setup = await startEngine(t, app, appHandlers(app), { databaseUrl })
  const src = await readyDrive(api)
  await setup.stop()
  const res = await api.post(`/api/2.0/drives/${src.uuid}/action/?do=clone`, {})
  t.equal(res.statusCode, 202)
  const dst = res.json().objects[0]
  const jobId = (await drive(dst.uuid)).lockedByJob!
  t.equal((await drive(src.uuid)).readers, 1, 'the clone reads its source')
  // server_drives is first read by the settle (the destination's resting status)
  const stale = await runStale(t, app, databaseUrl, jobId, 'server_drives')
  t.ok(stale.tookOver, 'the job was taken over while its settle waited')
  t.match(await drive(dst.uuid), { status: 'cloning_dst', lockedByJob: jobId }, 'the stale attempt did not settle the destination')
  t.equal((await drive(src.uuid)).readers, 1, 'nor release the source')
  t.match(await jobRow(app, jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'nor finish the job')
  await stale.newer()
  t.equal((await waitForJob(app, jobId)).state, 'success')
  t.match(await drive(dst.uuid), { status: 'unmounted', lockedByJob: null })
  t.equal((await drive(src.uuid)).readers, 0)
})

t.test('server_clone: a stale attempt does not release the new server; the newer one does', async t => {
  const jobId = newJobId()
  const serverId = randomUUID()
  await app.prisma.$transaction(async (tx) => {
    await tx.server.create({ data: { id: serverId, ownerId: alice.id, name: 'clone', cpu: 1000, mem: BigInt(GiB), vncPassword: 'x', status: 'stopped', lockedByJob: jobId } })
    await enqueueJob(tx, {
      id: jobId,
      ownerId: alice.id,
      operation: 'server_clone',
      params: { sourceServerId: randomUUID(), serverId, disks: [] },
      resources: [{ type: 'servers', id: serverId }]
    })
  })
  const stale = await runStale(t, app, databaseUrl, jobId, 'servers')
  t.ok(stale.tookOver, 'the job was taken over while its release waited')
  t.match(await app.prisma.server.findUniqueOrThrow({ where: { id: serverId } }), { lockedByJob: jobId }, 'the stale attempt did not release the server')
  t.match(await jobRow(app, jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'nor finish the job')
  await stale.newer()
  t.equal((await waitForJob(app, jobId)).state, 'success')
  t.match(await app.prisma.server.findUniqueOrThrow({ where: { id: serverId } }), { lockedByJob: null })
})

t.test('drive_clone: an attempt held up inside its fenced rename past its lease puts nothing in place; the next attempt does', async t => {
  const setup = await startEngine(t, app, appHandlers(app), { databaseUrl })
  const src = await readyDrive(api)
  await setup.stop()
  const w = await app.storage.openForWrite(src.uuid)
  await w.write(randomBytes(1024 * 1024), 5 * 1024 * 1024)
  await w.close()
  const dst = (await api.post(`/api/2.0/drives/${src.uuid}/action/?do=clone`, {})).json().objects[0]
  const jobId = (await drive(dst.uuid)).lockedByJob!
  // the real storage, whose first copy is held up (the thread does not run: a process stopped or
  // swapped out) inside its fenced step, the job row locked, just before the rename, past the lease
  let renames = 0
  const { proxy: storage, renamed: put } = copiesHeldInFence(app.storage, (n) => {
    renames = n
    if (n === 1) holdThread(2500)
  })
  const { log, lines } = memoryLogger()
  await startEngine(t, { ...app, log } as typeof app, { ...appHandlers(app), drive_clone: driveCloneHandler(() => storage) }, { databaseUrl, leaseSeconds: 2, leaseMarginMs: 500 })
  const done = await waitForJob(app, jobId, { timeoutMs: 20_000 })
  t.ok(lines.some(l => /job aborted: its lease ran out before an irreversible storage step/.test(l.msg)), 'the held-up attempt was refused by its guard at the rename')
  t.equal(renames, 2, 'the next attempt copied again')
  t.same(put, [2], 'the held-up attempt put nothing in place (its rename refused); the next one did')
  t.equal(done.state, 'success')
  t.equal(done.attempts, 2, 'the next attempt finished the clone')
  t.match(await drive(dst.uuid), { status: 'unmounted', lockedByJob: null })
  t.ok((await readAll(app.storage, dst.uuid)).equals(await readAll(app.storage, src.uuid)), 'the clone holds the source\'s data')
})
