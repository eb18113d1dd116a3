// Process roles on one database, as two real processes started by `clonejobs serve --role`:
// the api process serves the API and runs no job handlers; the worker process serves only the
// probes and metrics and runs the jobs. A clone asked of the api is done by the worker, and its
// events reach the api's SSE clients.
import t from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { serveCommand, serveOnFreePort } from '../helpers/service.ts'
import { createTestDatabase } from '../helpers/db.ts'
import { createDatabase } from '../../src/db/client.ts'
import { addAccount } from '../../src/features/accounts/service.ts'
import { openSse } from '../helpers/sse.ts'

const databaseUrl = await createTestDatabase(t)
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'clonejobs-roles-'))
t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }))

async function serve (role: string) {
  const { svc, port } = await serveOnFreePort(t, port => ({ ...process.env, DATABASE_URL: databaseUrl, DATA_DIR: dataDir, PORT: String(port), LOG_LEVEL: 'info', BOOTSTRAP_ACCOUNT: 'false', ROLE: '' }), serveCommand(role))
  return { child: svc.child, base: `http://127.0.0.1:${port}` }
}

const { prisma, close } = createDatabase(databaseUrl, { max: 2 })
t.teardown(close)
const account = await addAccount(prisma, 'roles@example.com', 'correct horse battery')
const headers = { authorization: 'Basic ' + Buffer.from('roles@example.com:correct horse battery').toString('base64') }
const json = { ...headers, 'content-type': 'application/json' }

const api = await serve('api')

async function jobState (id: string): Promise<string> {
  const res = await fetch(`${api.base}/api/2.0/jobs/${id}/`, { headers })
  return ((await res.json()) as { state: string }).state
}

async function until (what: string, check: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!await check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

t.test('the api process runs no jobs', async t => {
  const created = await fetch(`${api.base}/api/2.0/drives/`, { method: 'POST', headers: json, body: JSON.stringify({ name: 'src', size: 4 * 1024 * 1024, media: 'disk' }) })
  t.equal(created.status, 201)
  const drive = ((await created.json()) as { objects: Array<{ uuid: string }> }).objects[0]
  await new Promise(resolve => setTimeout(resolve, 1500))
  const job = await prisma.job.findFirstOrThrow({ where: { ownerId: account.id, operation: 'drive_create' } })
  t.equal(job.state, 'queued', 'nobody ran the drive_create job yet')
  t.equal(job.attempts, 0)
  t.equal((await prisma.drive.findUniqueOrThrow({ where: { id: drive.uuid } })).status, 'creating')
})

t.test('the worker serves the probes only and does the jobs the api process asked for', async t => {
  const worker = await serve('worker')
  for (const probe of ['/healthz', '/readyz', '/metrics']) t.equal((await fetch(worker.base + probe)).status, 200, `worker serves ${probe}`)
  const notHere = await fetch(`${worker.base}/api/2.0/jobs/`, { headers })
  t.equal(notHere.status, 404, 'the worker serves no API')

  const source = await prisma.drive.findFirstOrThrow({ where: { ownerId: account.id } })
  await until('the queued drive_create to be done by the worker', async () =>
    (await prisma.drive.findUniqueOrThrow({ where: { id: source.id } })).status === 'unmounted')

  const sse = await openSse(api.base, '/api/2.0/jobs/events/', headers)
  t.teardown(() => sse.close())
  t.equal(sse.status, 200)
  await new Promise(resolve => setTimeout(resolve, 200))
  const res = await fetch(`${api.base}/api/2.0/drives/${source.id}/action/?do=clone`, { method: 'POST', headers: json, body: JSON.stringify({ name: 'copy' }) })
  t.equal(res.status, 202)
  const copy = ((await res.json()) as { objects: Array<{ uuid: string, jobs: Array<{ uuid: string }> }> }).objects[0]
  const cloneJob = await prisma.job.findFirstOrThrow({ where: { ownerId: account.id, operation: 'drive_clone' } })
  await until('the clone to finish', async () => await jobState(cloneJob.id) === 'success')
  const done = await sse.next(f => f.data.resource_uri === `/api/2.0/jobs/${cloneJob.id}/` && f.data.object?.state === 'success')
  t.equal(done.event, 'jobs', 'the api process\'s SSE client hears the worker finish the clone')
  await sse.next(f => f.data.resource_uri === `/api/2.0/drives/${copy.uuid}/` && f.data.object?.status === 'unmounted')
  t.pass('and sees the new drive settle')
  const metrics = await (await fetch(worker.base + '/metrics')).text()
  t.match(metrics, /drive_clone/, 'the worker\'s metrics count the clone')
})
