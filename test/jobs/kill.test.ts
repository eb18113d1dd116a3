// The service process is killed with SIGKILL in the middle of running jobs and started again:
// the resumable job finishes from its checkpoint and the other fails cleanly with its cleanup,
// within the lease (3 s here) of the restarted process polling; no job stays started.
import t from 'tap'
import type { ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Operation } from '../../src/engine/types.ts'
import { enqueueJob } from '../../src/engine/enqueue.ts'
import { buildTestApp, createUser } from '../helpers/app.ts'
import { waitForJob } from '../helpers/jobs.ts'
import { spawnFixture } from '../helpers/service.ts'

const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures/service.ts')
const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)

async function startService (): Promise<{ child: ChildProcess, startedAt: number, readyAt: number }> {
  const startedAt = Date.now()
  const child = await spawnFixture(t, fixture, [databaseUrl], 'service')
  return { child, startedAt, readyAt: Date.now() }
}

t.test('SIGKILL mid-job, restart: resumed or failed cleanly within the lease', async t => {
  const first = await startService()
  const copy = randomUUID()
  const fragile = randomUUID()
  await app.prisma.$transaction(async tx => {
    await enqueueJob(tx, { id: copy, ownerId: alice.id, operation: 'kill_test_copy' as Operation })
    await enqueueJob(tx, { id: fragile, ownerId: alice.id, operation: 'kill_test_fragile' as Operation })
  })
  await waitForJob(app, fragile, { states: ['started'] })
  // let the copy get some blocks done
  for (let i = 0; i < 200; i++) {
    const row = await app.prisma.job.findUniqueOrThrow({ where: { id: copy } })
    if (((row.checkpoint as { done?: number } | null)?.done ?? 0) >= 5) break
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  const before = await app.prisma.job.findUniqueOrThrow({ where: { id: copy } })
  const doneBefore = (before.checkpoint as { done: number }).done
  t.equal(before.state, 'started')
  first.child.kill('SIGKILL')
  const killedAt = Date.now()
  await new Promise(resolve => first.child.once('exit', resolve))
  // the lease the dead process holds: renewed by its last heartbeat (every second here), so it
  // ends up to a heartbeat's interval (and a late beat's delay) before killedAt + the lease
  const held = await app.prisma.job.findUniqueOrThrow({ where: { id: fragile } })
  t.ok(held.lockedUntil !== null && held.state === 'started', 'the killed process held the job under a lease')
  const leaseEnd = held.lockedUntil!.getTime()

  const second = await startService()
  const f = await waitForJob(app, fragile, { timeoutMs: 30_000 })
  const fragileAt = Date.now()
  const c = await waitForJob(app, copy, { timeoutMs: 30_000 })
  const lease = 3000
  const expiredAt = Math.max(second.readyAt, leaseEnd)
  t.comment(`killed → restarted process ready: ${second.readyAt - killedAt} ms; lease expired and process ready → non-resumable job failed and cleaned up: ${fragileAt - expiredAt} ms; resumable job done ${Date.now() - expiredAt} ms after that (it had ${40 - doneBefore} blocks of 100 ms left)`)
  t.equal(c.state, 'success', 'the resumable job finished')
  t.equal(c.attempts, 2)
  t.match(c.result, { finishedBy: second.child.pid, attempts: 2 }, 'in the restarted process')
  t.ok(doneBefore >= 5 && (c.result as { resumedFrom: number }).resumedFrom >= doneBefore, `it resumed from its checkpoint (block ${(c.result as { resumedFrom: number }).resumedFrom})`)
  t.equal(f.state, 'error', 'the non-resumable job failed')
  t.match(f.error, { error_type: 'backend', error_message: /process running this job stopped/ })
  const marker = await app.prisma.setting.findUnique({ where: { key: `cleanup:${fragile}` } })
  t.equal(marker?.value, String(second.child.pid), 'its cleanup ran in the restarted process')
  // PostgreSQL's clock on both sides: the job failed (after its takeover) no earlier than the
  // dead process's lease ended. This once compared the time since the kill with the lease less
  // 500 ms, which a heartbeat more than 500 ms before the kill undercuts: CI failed it at 2,457 ms.
  t.ok(f.finishedAt !== null && f.finishedAt.getTime() >= leaseEnd, `nothing was taken over before the lease expired (failed ${f.finishedAt === null ? '-' : f.finishedAt.getTime() - leaseEnd} ms after it)`)
  t.ok(fragileAt - expiredAt < lease, 'taken over within a lease time once the lease had expired and the process was up')
  t.equal(await app.prisma.job.count({ where: { state: { in: ['started', 'cancelling'] } } }), 0, 'no job is left started')
  second.child.kill('SIGTERM')
  await new Promise(resolve => second.child.once('exit', resolve))
})
