// Retention: finished job trees older than the retention are purged in batches under an advisory
// lock (times are moved, not slept); the schedule runs it; /metrics counts it.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import pg from 'pg'
import { PURGE_LOCK_KEY } from '../../src/engine/purge.ts'
import { jobRefsFor } from '../../src/features/jobs/view.ts'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { eventually } from '../helpers/app.ts'

const DAY = 86_400_000
const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const api = client(app, alice)

async function job (opts: { state?: string, operation?: string, finishedAgoMs?: number | null, parentId?: string, rootId?: string, drive?: string }) {
  const id = randomUUID()
  const finishedAt = opts.finishedAgoMs === null || opts.finishedAgoMs === undefined ? null : new Date(Date.now() - opts.finishedAgoMs)
  await app.prisma.job.create({
    data: {
      id,
      ownerId: alice.id,
      operation: opts.operation ?? 'drive_clone',
      state: opts.state ?? 'success',
      parentId: opts.parentId ?? null,
      rootId: opts.rootId ?? id,
      finishedAt,
      ...(opts.drive ? { links: { create: [{ resourceType: 'drives', resourceId: opts.drive }] } } : {})
    }
  })
  return id
}

t.test('old finished trees go, everything else stays', async t => {
  const drive = randomUUID()
  const oldRoot = await job({ finishedAgoMs: 4 * DAY, drive })
  const oldChild = await job({ finishedAgoMs: 4 * DAY, parentId: oldRoot, rootId: oldRoot, drive })
  const oldFailed = await job({ state: 'error', finishedAgoMs: 5 * DAY })
  const recent = await job({ finishedAgoMs: 2 * DAY, drive })
  const running = await job({ state: 'started', finishedAgoMs: null })
  // a child finished long ago inside a tree that is still running is kept with its tree
  const runningChild = await job({ finishedAgoMs: 10 * DAY, parentId: running, rootId: running })

  const r = await app.purgeJobs()
  t.match(r, { ran: true, jobs: 2 })
  const left = (await app.prisma.job.findMany({ select: { id: true } })).map(j => j.id)
  t.notOk(left.includes(oldRoot) || left.includes(oldChild) || left.includes(oldFailed), 'old trees are gone, children included')
  t.ok([recent, running, runningChild].every(id => left.includes(id)), 'recent and unfinished trees stay')
  t.same((await jobRefsFor(app.prisma, 'drives', [drive])).get(drive)!.map(r => r.uuid), [recent], 'purged jobs leave the resources\' jobs lists')
  t.equal((await api.get(`/api/2.0/jobs/${oldRoot}/`)).statusCode, 404)

  const later = await app.purgeJobs(() => new Date(Date.now() + 2 * DAY))
  t.equal(later.jobs, 1, 'moving the clock two days on purges the recent one too')
  t.notOk(await app.prisma.job.findUnique({ where: { id: recent } }))
})

t.test('purges in batches', async t => {
  await app.prisma.$executeRawUnsafe(`
    INSERT INTO jobs (id, owner_id, root_id, operation, state, finished_at)
    SELECT x.id, $1::uuid, x.id, 'drive_clone', 'success', now() - interval '4 days'
    FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, 1100)) x`, alice.id)
  const r = await app.purgeJobs()
  t.equal(r.jobs, 1100)
  t.equal(r.batches, 3, '500 per batch')
})

t.test('one process at a time: a held advisory lock makes the others skip', async t => {
  await job({ finishedAgoMs: 4 * DAY })
  const other = new pg.Client({ connectionString: databaseUrl })
  await other.connect()
  t.teardown(() => other.end())
  await other.query('SELECT pg_advisory_lock($1)', [PURGE_LOCK_KEY])
  t.match(await app.purgeJobs(), { ran: false, jobs: 0 })
  await other.query('SELECT pg_advisory_unlock($1)', [PURGE_LOCK_KEY])
  t.match(await app.purgeJobs(), { ran: true, jobs: 1 })
})

t.test('the schedule inside the service runs the purge', async t => {
  const { app: scheduled } = await buildTestApp(t, { databaseUrl, config: { purgeCron: '* * * * * *' } })
  const id = await job({ finishedAgoMs: 4 * DAY })
  await eventually(async () => !(await scheduled.prisma.job.findUnique({ where: { id } })), { timeoutMs: 5000 })
  t.pass('purged by the every-second schedule')
  const body = await eventually(async () => {
    const text = (await scheduled.inject({ url: '/metrics' })).body
    return /clonejobs_purged_total\{kind="jobs"\} [1-9]/.test(text) && text
  }, { timeoutMs: 5000 })
  t.match(body, /clonejobs_purge_runs_total\{outcome="ran"\} [1-9]/, 'purge runs and counts are in /metrics')
})

t.test('/metrics: jobs by state and operation, Prometheus text', async t => {
  await job({ state: 'cancelled', operation: 'server_stop', finishedAgoMs: 0 })
  const res = await app.inject({ url: '/metrics' })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /text\/plain/)
  t.match(res.body, /clonejobs_jobs\{state="cancelled",operation="server_stop"\} 1\n/)
  t.match(res.body, /# TYPE clonejobs_job_claim_latency_seconds histogram/)
  t.match(res.body, /# TYPE clonejobs_job_duration_seconds histogram/)
})
