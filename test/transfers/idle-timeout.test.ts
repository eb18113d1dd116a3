// An upload whose body goes silent for BODY_IDLE_TIMEOUT_MS is ended: the connection closes, the
// drive is removed and the upload's job ends in `error` with that reason. Bodies that keep
// flowing, however slowly, are not cut.
import net from 'node:net'
import t from 'tap'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'

const { app } = await buildTestApp(t, { runWorkers: false, config: { bodyIdleTimeoutMs: 500 } })
const user = await createUser(app)
const api = client(app, user)
await app.listen({ port: 0, host: '127.0.0.1' })
const port = (app.server.address() as net.AddressInfo).port

function head (name: string, length: number): string {
  return `PUT /api/2.0/drives/upload/${name} HTTP/1.1\r\nHost: x\r\nAuthorization: ${user.authorization}\r\n` +
    `Content-Type: application/octet-stream\r\nContent-Length: ${length}\r\n\r\n`
}

t.test('a silent upload is ended, its drive removed, its job in error', async t => {
  const socket = net.connect(port, '127.0.0.1')
  let answer = ''
  socket.on('data', d => { answer += d.toString() })
  const closed = new Promise<number>(resolve => socket.on('close', () => resolve(Date.now())))
  socket.on('error', () => {})
  const started = Date.now()
  socket.write(head('silent', 1024 * 1024) + 'x'.repeat(1000))
  const at = await closed
  t.ok(at - started >= 450 && at - started < 5000, `the connection was ended after ${at - started} ms`)
  t.notMatch(answer, /^HTTP\/1.1 2/, 'no success answer')
  const job = await eventually(async () => {
    const jobs = (await api.get('/api/2.0/jobs/?operation=drive_upload&limit=0')).json().objects as Array<Record<string, unknown>>
    return jobs.find(j => j.state === 'error')
  }, { timeoutMs: 5000 })
  t.match(JSON.stringify(job), /sent nothing for 500 ms/, 'the job says why')
  const drives = (await api.get('/api/2.0/drives/?name=silent')).json()
  t.equal(drives.meta.total_count, 0, 'the drive is removed')
})

t.test('a slow but steady upload is not cut', async t => {
  const socket = net.connect(port, '127.0.0.1')
  let answer = ''
  socket.on('data', d => { answer += d.toString() })
  const closed = new Promise<void>(resolve => socket.on('close', () => resolve()))
  socket.write(head('steady', 6))
  for (let i = 0; i < 6; i++) {
    await new Promise(resolve => setTimeout(resolve, 200))
    socket.write('y')
  }
  await eventually(async () => answer.includes('\r\n\r\n') && answer)
  socket.end()
  await closed
  t.match(answer, /^HTTP\/1.1 201 /, 'stored: 1.2 s in all, never 500 ms silent')
})
