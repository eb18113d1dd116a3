// A stale attempt of drive_clone on rbd (taken over between the fence before its copy-on-write clone
// and its settle: a process frozen there) leaves no orphan: the clone it made is removed once the
// drive's row is gone (the newer attempt failed or was cancelled, and cleaned up before the clone
// existed), with the snapshot it pinned on the source; while the row exists the clone stays, and the
// newer attempt finishes with it. Run by `npm run test:rbd`.
import { execFileSync } from 'node:child_process'
import pg from 'pg'
import t, { type Test } from 'tap'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { appHandlers, startEngine, waitForJob } from '../helpers/jobs.ts'
import { WAITING_ON } from '../helpers/locks.ts'
import { jobRow, runStale, takeOver, TAKEN_BY } from '../helpers/takeover.ts'
import { readyDrive } from '../clones/helpers.ts'

if (process.env.STORAGE !== 'rbd') throw new Error('STORAGE=rbd must be set (npm run test:rbd sets it)')
const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const api = client(app, alice)
const drive = (id: string) => app.prisma.drive.findUnique({ where: { id } })

/** A drive ready to be cloned, and a clone of it requested (its job queued, no worker running). */
async function cloneRequested (t: Test): Promise<{ src: string, dst: string, jobId: string }> {
  const setup = await startEngine(t, app, appHandlers(app), { databaseUrl })
  const src = (await readyDrive(api)).uuid as string
  await setup.stop()
  const res = await api.post(`/api/2.0/drives/${src}/action/?do=clone`, {})
  t.equal(res.statusCode, 202, 'the clone is accepted')
  const dst = res.json().objects[0].uuid as string
  return { src, dst, jobId: (await drive(dst))!.lockedByJob! }
}

/** The snapshots of an image (a copy-on-write clone pins one on its source). */
const snapshots = (id: string): string[] => (JSON.parse(execFileSync('rbd', ['--conf', process.env.CEPH_CONF!, 'snap', 'ls', '--format', 'json', `${process.env.RBD_POOL || 'rbd'}/${id}`], { encoding: 'utf8' })) as Array<{ name: string }>).map(s => s.name)

t.test('the clone of an attempt taken over after its fence is removed once the newer attempt has removed the drive', async t => {
  const { src, dst, jobId } = await cloneRequested(t)
  const connect = async () => {
    const c = new pg.Client({ connectionString: databaseUrl })
    await c.connect()
    t.teardown(() => c.end().catch(() => {}))
    return c
  }
  const [locker, other] = [await connect(), await connect()]
  // the settle's first read (the destination's mounts) waits: the process froze after its clone
  await locker.query('BEGIN')
  await locker.query('LOCK TABLE server_drives IN ACCESS EXCLUSIVE MODE')
  const engine = await startEngine(t, app, appHandlers(app), { databaseUrl, leaseSeconds: 60, heartbeatMs: 60_000 })
  await eventually(async () => (await other.query(WAITING_ON, ['server_drives'])).rowCount! > 0)
  t.ok(await app.storage.exists(dst), 'the stale attempt made its clone')
  t.ok(await takeOver(other, jobId), 'the job was taken over after the fence')
  // the newer attempt was cancelled and cleaned up before that clone existed: the row went, no image
  await locker.query('DELETE FROM drives WHERE id = $1::uuid', [dst])
  await locker.query('COMMIT')
  await engine.idle()
  t.notOk(await app.storage.exists(dst), 'the stale attempt removed the clone it made: no orphan')
  t.same(snapshots(src), [], 'nor a snapshot pinning the source')
  t.equal(await app.prisma.imageRemoval.findUnique({ where: { imageId: dst } }), null, 'and left no removal record')
  t.match(await jobRow(app, jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'and recorded nothing')
})

t.test('the clone of an attempt taken over after its fence stays while the drive exists; the newer attempt finishes with it', async t => {
  const { src, dst, jobId } = await cloneRequested(t)
  const stale = await runStale(t, app, databaseUrl, jobId, 'server_drives')
  t.ok(stale.tookOver, 'the job was taken over while its settle waited')
  t.ok(await app.storage.exists(dst), 'the clone stays: the drive (and the newer attempt) still has it')
  t.match(await drive(dst), { status: 'cloning_dst', lockedByJob: jobId })
  await stale.newer()
  t.equal((await waitForJob(app, jobId)).state, 'success', 'the newer attempt finished the clone')
  t.match(await drive(dst), { status: 'unmounted', lockedByJob: null })
  t.equal((await drive(src))!.readers, 0)
})
