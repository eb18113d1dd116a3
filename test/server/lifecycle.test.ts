// The real service on the embedded default, as an operator sees it: a stop that keeps its promises
// (SIGTERM with a running job, an open SSE stream and a slow download), a PostgreSQL that is
// restarted when it dies, its random password, a busy default port, the CLI finding the running
// cluster, and root's permission rules.
import t from 'tap'
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { once } from 'node:events'
import { promisify } from 'node:util'
import pg from 'pg'
import { runningPostmaster, startEmbeddedPostgres } from '../../src/db/embedded.ts'
import { ROOT } from '../setup/test-db.ts'
import { embeddedEnv, processesMentioning, startService } from '../helpers/service.ts'

function tempDir (t: { teardown: (fn: () => void) => void }, mode = 0o755): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clonejobs-life-'))
  fs.chmodSync(dir, mode)
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

async function credentials (svc: ReturnType<typeof startService>): Promise<string> {
  const [, email, password] = await svc.waitFor(/email:\s+(\S+)\n\s+password:\s+(\S+)/)
  await svc.waitFor(/clonejobs is serving/)
  return 'Basic ' + Buffer.from(`${email}:${password}`).toString('base64')
}

async function waitUntil<T> (fn: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await fn().catch(() => undefined)
    if (v !== undefined) return v
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

t.test('SIGTERM: SSE gets a closing frame, the running job goes back to the queue, a slow download is cut at the grace, PostgreSQL stops last', async t => {
  const dataDir = path.join(tempDir(t), 'data')
  const graceMs = 3000
  // a power change that takes a minute: a job that is surely running when the signal comes
  const env = await embeddedEnv(dataDir, { STOP_GRACE_MS: String(graceMs), HYPERVISOR_DELAY_MS: '60000' })
  const svc = startService(env)
  t.teardown(() => { if (svc.child.exitCode === null) svc.child.kill('SIGKILL') })
  const auth = await credentials(svc)
  const base = `http://127.0.0.1:${env.PORT}/api/2.0`
  const api = async (method: string, url: string, body?: unknown) => {
    const res = await fetch(base + url, { method, headers: { authorization: auth, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) })
    return { status: res.status, body: await res.json() as any }
  }

  const size = 64 * 1024 * 1024
  const drive = (await api('POST', '/drives/', { name: 'disk', size, media: 'disk' })).body.objects[0].uuid as string
  await waitUntil(async () => (await api('GET', `/drives/${drive}/`)).body.status === 'unmounted' ? true : undefined)
  const server = (await api('POST', '/servers/', { name: 'web', cpu: 1000, mem: 536870912, vnc_password: 'secret12' })).body.objects[0].uuid as string
  t.equal((await api('POST', `/servers/${server}/action/?do=start`)).status, 202)
  const job = await waitUntil(async () => {
    const jobs = (await api('GET', '/jobs/?state=started')).body.objects as Array<{ uuid: string }>
    return jobs[0]?.uuid
  })

  // an SSE stream, read to its end
  const sse = await fetch(`${base}/jobs/events/`, { headers: { authorization: auth } })
  t.equal(sse.status, 200)
  const sseText = (async () => {
    let text = ''
    const decoder = new TextDecoder()
    for await (const chunk of sse.body!) text += decoder.decode(chunk as Uint8Array)
    return text
  })()

  // a download whose client reads one chunk and then stalls
  const download = await fetch(`${base}/drives/${drive}/download/`, { headers: { authorization: auth } })
  t.equal(download.status, 200)
  const reader = download.body!.getReader()
  let received = (await reader.read()).value?.length ?? 0

  const signalled = Date.now()
  svc.child.kill('SIGTERM')
  // the stalled client resumes reading after the signal: it must not get the whole image
  const downloadOutcome = (async () => {
    await new Promise(resolve => setTimeout(resolve, graceMs + 500))
    try {
      for (;;) {
        const { done, value } = await reader.read()
        if (done) return 'complete'
        received += value.length
      }
    } catch {
      return 'cut'
    }
  })()

  const [code] = await svc.exited
  const took = Date.now() - signalled
  t.equal(code, 0, 'the stop ends cleanly', { output: svc.output().slice(-4000) })
  t.ok(took < graceMs + 3000, `gone ${took} ms after SIGTERM (grace ${graceMs} ms)`)
  t.ok(took >= graceMs - 500, 'the in-flight download was given the grace')
  t.match(await sseText, /event: shutdown\ndata: \{"reason":"server shutting down"\}\n\n$/, 'the SSE stream ended with a closing frame')
  t.equal(await downloadOutcome, 'cut', 'the stalled download was cut, not passed off as complete')
  t.ok(received < size, `the client got ${received} of ${size} bytes`)
  t.match(svc.output(), /"msg":"stopping"/)
  t.notMatch(svc.output(), /could not release jobs/)

  const pgDir = path.join(dataDir, 'pg')
  t.equal(runningPostmaster(pgDir), undefined, 'no postmaster left running')
  t.same(processesMentioning(pgDir), [], 'no orphan PostgreSQL process')

  // look at the job with the service gone
  const db = await startEmbeddedPostgres({ dir: pgDir, port: Number(env.EMBEDDED_PG_PORT) })
  t.teardown(() => db.stop())
  const client = new pg.Client({ connectionString: db.url })
  await client.connect()
  const row = (await client.query('SELECT state, locked_by, locked_until FROM jobs WHERE id = $1', [job])).rows[0]
  const transfer = (await client.query("SELECT state FROM jobs WHERE operation = 'drive_download'")).rows
  await client.end()
  t.same(row, { state: 'queued', locked_by: null, locked_until: null }, 'the running job was handed back, its lease released')
  t.same(transfer, [{ state: 'error' }], 'the cut download\'s job was recorded as failed (state error) before the database closed')
})

t.test('the embedded PostgreSQL: random password, busy default port, restarted when killed, found by the CLI', async t => {
  const dataDir = path.join(tempDir(t), 'data')
  // the default port is taken by something else
  const blocker = net.createServer().listen(0, '127.0.0.1')
  await once(blocker, 'listening')
  t.teardown(() => blocker.close())
  const busy = (blocker.address() as net.AddressInfo).port
  const env = await embeddedEnv(dataDir, { EMBEDDED_PG_PORT: String(busy) })
  const svc = startService(env)
  t.teardown(() => { if (svc.child.exitCode === null) svc.child.kill('SIGKILL') })
  const auth = await credentials(svc)
  const pgDir = path.join(dataDir, 'pg')

  const port = Number(fs.readFileSync(path.join(pgDir, 'clonejobs-port'), 'utf8'))
  t.not(port, busy, 'a free port was taken instead of the busy default')
  t.equal(runningPostmaster(pgDir)?.port, port, 'and recorded in the data folder')
  const pwFile = path.join(pgDir, 'clonejobs-password')
  t.equal(fs.statSync(pwFile).mode & 0o777, 0o600, 'the password file is 0600')
  const password = fs.readFileSync(pwFile, 'utf8').trim()
  t.ok(password.length >= 24 && password !== 'clonejobs', 'a random password, not the old fixed one')

  // the bootstrap password is on the terminal as text, never inside a JSON log record
  const [, bootstrapPassword] = /email:\s+\S+\n\s+password:\s+(\S+)/.exec(svc.stdout())!
  const jsonLines = svc.output().split('\n').filter(l => l.startsWith('{'))
  t.ok(jsonLines.length > 3, 'the service logs JSON lines')
  t.notOk(jsonLines.some(l => l.includes(bootstrapPassword)), 'no log record holds the bootstrap password')

  // the CLI finds the running cluster through the data folder
  const cli = await promisify(execFile)(process.execPath, [path.join(ROOT, 'bin/clonejobs.js'), 'user', 'list'], { cwd: ROOT, env })
  t.match(cli.stdout, /admin@clonejobs\.local/)
  t.equal(runningPostmaster(pgDir)?.port, port, 'the CLI left the service\'s cluster running')

  // kill the postmaster: the service starts it again and requests recover without a restart
  const before = runningPostmaster(pgDir)!.pid
  process.kill(before, 'SIGKILL')
  const ok = await waitUntil(async () => {
    const res = await fetch(`http://127.0.0.1:${env.PORT}/api/2.0/jobs/`, { headers: { authorization: auth } })
    return res.status === 200 ? true : undefined
  })
  t.ok(ok, 'requests succeed again')
  t.not(runningPostmaster(pgDir)?.pid, before, 'a new postmaster runs')
  t.equal(svc.child.exitCode, null, 'the service itself kept running')
  t.match(svc.output(), /the embedded PostgreSQL is running again/)

  svc.child.kill('SIGINT')
  const [code] = await svc.exited
  t.equal(code, 0, 'SIGINT stops cleanly')
  t.same(processesMentioning(pgDir), [], 'no PostgreSQL left behind')
})

t.test('as root, under a 0700 parent: one clear line and a quick exit; under a 0755 parent it works', { skip: process.getuid?.() !== 0 ? 'not root' : false }, async t => {
  const closed = tempDir(t, 0o700)
  const env = await embeddedEnv(path.join(closed, 'data'))
  const svc = startService(env)
  const [code] = await svc.exited
  t.equal(code, 1)
  const lines = svc.output().trim().split('\n')
  t.equal(lines.length, 1, 'one line')
  t.match(lines[0], /cannot reach .* is mode 0700.*DATA_DIR/, 'says what blocks and what to do')
  t.notMatch(svc.output(), /\n\s+at /, 'no stack trace')

  const open = tempDir(t, 0o755)
  const env2 = await embeddedEnv(path.join(open, 'data'))
  const svc2 = startService(env2)
  t.teardown(() => { if (svc2.child.exitCode === null) svc2.child.kill('SIGKILL') })
  await svc2.waitFor(/clonejobs is serving/)
  svc2.child.kill('SIGTERM')
  const [code2] = await svc2.exited
  t.equal(code2, 0)
})
