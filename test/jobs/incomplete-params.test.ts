// Jobs whose parameters lack what their handler needs (only jobs written around the service, by
// SQL, have such) fail once with that message, and their cleanups, which read the same parameters,
// are skipped with a warning: such a job made nothing, so there is nothing to undo and no failed
// cleanup to report (a look before shipping found 2,744 "job cleanup failed" errors in the log
// for 2,744 such jobs inserted by psql).
import t from 'tap'
import { OPERATIONS } from '../../src/engine/types.ts'
import { buildTestApp, createUser } from '../helpers/app.ts'
import { waitForAllJobs } from '../helpers/jobs.ts'

interface Line { level: number, msg: string, job?: string, operation?: string }
const lines: Line[] = []
const stream = { write: (s: string) => { lines.push(JSON.parse(s) as Line) } }
const { app } = await buildTestApp(t, { runWorkers: true, logger: { level: 'warn', stream } })
const alice = await createUser(app)

t.test('each operation\'s job with empty parameters fails once, its cleanup skipped at warn', async t => {
  const { rows } = await app.dbPool.query<{ id: string, operation: string }>(`
    INSERT INTO jobs (id, owner_id, root_id, operation, state, params)
    SELECT x.id, $1::uuid, x.id, x.op, 'queued', '{}' FROM (SELECT gen_random_uuid() AS id, op FROM unnest($2::text[]) AS op) x
    RETURNING id::text, operation`, [alice.id, OPERATIONS])
  await waitForAllJobs(app, 30_000)
  const jobs = await app.prisma.job.findMany({ where: { id: { in: rows.map(r => r.id) } }, select: { id: true, operation: true, state: true, error: true, attempts: true } })
  const incomplete = jobs.filter(j => (j.error as { error_message?: string } | null)?.error_message === 'the job parameters are incomplete')
  // the handlers that need parameters (each named here, so that one that stops checking shows as
  // missing): all but drive_download's (its job stands for a download whose request sends the
  // bytes) and server_delete, which has no handler
  const checking = ['drive_clone', 'drive_create', 'drive_delete', 'drive_flatten', 'drive_resize', 'drive_upload', 'server_clone', 'server_start', 'server_stop']
  t.same(incomplete.map(j => j.operation).sort(), checking, `these failed on their parameters: ${incomplete.map(j => j.operation).join(', ')}`)
  for (const j of incomplete) {
    t.equal(j.state, 'error', `${j.operation}: failed`)
    t.equal(j.attempts, 1, `${j.operation}: in one attempt`)
  }
  // and the other two failed on their own terms, in one attempt too
  const others = Object.fromEntries(jobs.filter(j => !incomplete.includes(j)).map(j => [j.operation, [j.state, j.attempts, (j.error as { error_message?: string } | null)?.error_message]]))
  t.same(others, {
    drive_download: ['error', 1, 'the download was interrupted: the process sending it stopped'],
    server_delete: ['error', 1, 'no handler for operation server_delete']
  }, 'drive_download failed as an interrupted download, server_delete for want of a handler')
  const errors = lines.filter(l => l.level >= 50)
  t.same(errors.map(l => `${l.operation ?? ''}: ${l.msg}`), [], 'no error in the log')
  const skipped = lines.filter(l => l.msg.startsWith('job cleanup skipped: the job parameters are incomplete'))
  // drive_flatten has no cleanup
  t.same(skipped.map(l => l.operation).sort(), checking.filter(o => o !== 'drive_flatten'), 'each cleanup skipped, with a warning')
  const log = await app.prisma.jobLogLine.findMany({ where: { jobId: incomplete.find(j => j.operation === 'drive_clone')!.id }, orderBy: { id: 'asc' } })
  t.ok(log.some(l => l.line.includes('cleanup skipped: the job parameters are incomplete')), 'and the job\'s log says so')
})
