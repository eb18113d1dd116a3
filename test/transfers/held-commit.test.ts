// A request-held job (a download's) is held, and so heartbeated, only once the transaction that
// made it has committed. A heartbeat in between cannot see the job, takes its lease for lost, and
// the download's end could then not be recorded: the job stayed `started` until its lease ran
// out and was then failed by a takeover, although every byte had been sent (a CI flake).
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { JobEngine } from '../../src/engine/engine.ts'
import { startDirectDownload } from '../../src/features/transfers/download-jobs.ts'
import { transferDeps } from '../../src/features/transfers/service.ts'
import { buildTestApp, createUser } from '../helpers/app.ts'
import { waitForJob } from '../helpers/jobs.ts'
import { MiB, randomImage } from './helpers.ts'

const { app, databaseUrl } = await buildTestApp(t)
const alice = await createUser(app)
const data = randomImage(MiB)
const up = await app.inject({ method: 'PUT', url: '/api/2.0/drives/upload/image.raw', headers: { authorization: alice.authorization, 'content-type': 'application/octet-stream' }, payload: data })
const uuid = up.body

t.test('a download\'s job is held only once it is committed: heartbeats during its transaction do not lose it', async t => {
  t.equal(up.statusCode, 201, up.body)
  // a heartbeat every 5 ms, and transactions that commit 100 ms after their work: many heartbeats
  // run while the new job is not committed yet
  const engine = new JobEngine({ prisma: app.prisma, databaseUrl, log: app.log, concurrency: 1, leaseSeconds: 30, heartbeatMs: 5 })
  t.teardown(() => engine.stop())
  const prisma = app.prisma
  const slowCommit = new Proxy(prisma, {
    get (target, key) {
      if (key === '$transaction') {
        return async (fn: (tx: unknown) => Promise<unknown>) => target.$transaction(async (tx) => {
          const r = await fn(tx)
          await sleep(100)
          return r
        }, { timeout: 10_000 })
      }
      const v: unknown = Reflect.get(target, key, target)
      return typeof v === 'function' ? v.bind(target) : v
    }
  })
  const deps = { ...transferDeps(app), prisma: slowCommit, engine }
  const { held } = await startDirectDownload(deps, alice.id, uuid, () => undefined)
  await sleep(50)
  t.notOk(held.signal.aborted, 'the lease is held after heartbeats before and after the commit')
  await prisma.$transaction(async (tx) => held.finish(tx, { state: 'success', result: { bytes: data.length } }))
  const job = await waitForJob(app, held.id)
  t.equal(job.state, 'success', 'the download\'s end is recorded')
})
