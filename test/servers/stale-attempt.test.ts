// A stale attempt of server_start or server_stop (its job was taken over by a newer attempt while
// it was held up) does not settle the server; the newer attempt does (test/helpers/takeover.ts).
import t from 'tap'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { appHandlers, startEngine, waitForJob } from '../helpers/jobs.ts'
import { jobRow, runStale, TAKEN_BY } from '../helpers/takeover.ts'
import { MINIMAL } from './helpers.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const api = client(app, alice)
const server = (id: string) => app.prisma.server.findUniqueOrThrow({ where: { id } })

async function act (id: string, action: 'start' | 'stop'): Promise<string> {
  const res = await api.post(`/api/2.0/servers/${id}/action/?do=${action}`, {})
  if (res.statusCode !== 202) throw new Error(`${action}: ${res.statusCode} ${res.body}`)
  return (await server(id)).lockedByJob!
}

t.test('server_start: a stale attempt does not settle the server running; the newer one does', async t => {
  const s = (await api.post('/api/2.0/servers/', MINIMAL)).json().objects[0]
  const jobId = await act(s.uuid, 'start')
  const stale = await runStale(t, app, databaseUrl, jobId, 'servers')
  t.ok(stale.tookOver, 'the job was taken over while its attempt waited')
  t.match(await server(s.uuid), { status: 'starting', activeSince: null, lockedByJob: jobId }, 'the stale attempt did not settle the server')
  t.match(await jobRow(app, jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'nor finish the job')
  await stale.newer()
  t.equal((await waitForJob(app, jobId)).state, 'success', 'the newer attempt started it')
  t.match(await server(s.uuid), { status: 'running', lockedByJob: null })
})

t.test('server_stop: a stale attempt does not settle the server stopped; the newer one does', async t => {
  const s = (await api.post('/api/2.0/servers/', MINIMAL)).json().objects[0]
  const setup = await startEngine(t, app, appHandlers(app), { databaseUrl })
  t.equal((await waitForJob(app, await act(s.uuid, 'start'))).state, 'success')
  await setup.stop()
  const jobId = await act(s.uuid, 'stop')
  const stale = await runStale(t, app, databaseUrl, jobId, 'servers')
  t.ok(stale.tookOver, 'the job was taken over while its attempt waited')
  t.match(await server(s.uuid), { status: 'stopping', lockedByJob: jobId }, 'the stale attempt did not settle the server')
  t.match(await jobRow(app, jobId), { state: 'started', attempts: 2, lockedBy: TAKEN_BY, finishedAt: null }, 'nor finish the job')
  await stale.newer()
  t.equal((await waitForJob(app, jobId)).state, 'success', 'the newer attempt stopped it')
  t.match(await server(s.uuid), { status: 'stopped', activeSince: null, lockedByJob: null })
})
