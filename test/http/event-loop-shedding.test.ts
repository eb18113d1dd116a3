// A lagging event loop is answered 503 `concurrency` with Retry-After, and serving resumes once
// the loop is idle. (That the start-up's own blocking never refuses the first requests after
// ready is shown by test/server/roles.test.ts, whose real processes are asked at once.)
import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildTestApp, client, createUser } from '../helpers/app.ts'

function blockLoop (ms: number): void {
  const end = Date.now() + ms
  while (Date.now() < end) { /* the event loop is stuck here, as under CPU starvation */ }
}

t.test('a stuck loop is shed, then serving resumes', async t => {
  const { app } = await buildTestApp(t, { config: { maxEventLoopDelayMs: 50 } })
  const api = client(app, await createUser(app))
  await sleep(1200) // armed: two samples after ready
  t.equal((await api.get('/api/2.0/drives/')).statusCode, 200, 'an idle loop is served')
  // a sustained lag (the sampler reports the mean delay over its 500 ms interval)
  for (let i = 0; i < 12; i++) { blockLoop(100); await sleep(1) }
  const shed = await api.get('/api/2.0/drives/')
  t.equal(shed.statusCode, 503, shed.body)
  t.equal(shed.json()[0].error_type, 'concurrency')
  t.equal(shed.headers['retry-after'], '1')

  let status = 0
  for (let i = 0; i < 20 && status !== 200; i++) {
    await sleep(250)
    status = (await api.get('/api/2.0/drives/')).statusCode
  }
  t.equal(status, 200, 'served again once the loop is idle')
})
