// The process as a new user runs it: `npm start` with no configuration starts an embedded
// PostgreSQL under DATA_DIR, prints a first account, serves the API, and closes cleanly.
import t from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { freePorts } from '../helpers/net.ts'
import { startService } from '../helpers/service.ts'

t.test('a first start on the embedded default serves jobs with the printed credentials', async t => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'clonejobs-start-'))
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }))
  const [port, pgPort] = await freePorts(2)
  const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir, PORT: String(port), EMBEDDED_PG_PORT: String(pgPort), LOG_LEVEL: 'info' }
  delete env.DATABASE_URL
  delete env.TEST_DATABASE_URL

  const started = Date.now()
  const svc = startService(env)
  t.teardown(() => { if (svc.child.exitCode === null) svc.child.kill('SIGKILL') })
  const [, email, password] = await svc.waitFor(/email:\s+(\S+)\n\s+password:\s+(\S+)/)
  await svc.waitFor(/clonejobs is serving/)
  // the heap may double between major GCs: a streaming transfer no longer runs them back to back
  t.match(svc.stdout(), /"v8Flags":"--heap-growing-percent=100"[^\n]*clonejobs is serving/, 'the entry set V8\'s heap growing factor')
  const elapsed = Date.now() - started
  t.ok(elapsed < 60_000, `served after ${elapsed} ms`)
  t.ok(fs.existsSync(path.join(dataDir, 'pg', 'PG_VERSION')), 'the database lives under DATA_DIR/pg')

  const auth = 'Basic ' + Buffer.from(`${email}:${password}`).toString('base64')
  const res = await fetch(`http://127.0.0.1:${port}/api/2.0/jobs/`, { headers: { authorization: auth } })
  t.equal(res.status, 200)
  t.same(await res.json(), { meta: { limit: 20, offset: 0, total_count: 0 }, objects: [] })
  t.ok(res.headers.get('x-request-id'))
  const denied = await fetch(`http://127.0.0.1:${port}/api/2.0/jobs/`, { headers: { authorization: 'Basic ' + Buffer.from(`${email}:wrong`).toString('base64') } })
  t.equal(denied.status, 401)
  t.equal(((await denied.json()) as Array<{ error_type: string }>)[0].error_type, 'permission')

  svc.child.kill('SIGTERM')
  const [code] = await svc.exited
  t.equal(code, 0, 'SIGTERM closes cleanly')
  t.notOk(fs.existsSync(path.join(dataDir, 'pg', 'postmaster.pid')), 'the embedded PostgreSQL was stopped')

  // a second start finds the account and does not print a new one
  const again = startService(env)
  t.teardown(() => { if (again.child.exitCode === null) again.child.kill('SIGKILL') })
  await again.waitFor(/clonejobs is serving/)
  t.notMatch(again.output(), /password:/, 'credentials are printed only once')
  const res2 = await fetch(`http://127.0.0.1:${port}/api/2.0/jobs/`, { headers: { authorization: auth } })
  t.equal(res2.status, 200, 'data survived the restart')
  again.child.kill('SIGTERM')
  await again.exited
})
