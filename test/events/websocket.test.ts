// The CloudSigma websocket: async_auth cookie or Basic auth, {resource_type, resource_uri, object}
// frames, isolation between accounts, every path, one frame per change.
import net from 'node:net'
import t from 'tap'
import WebSocket from 'ws'
import { enqueueJob } from '../../src/engine/enqueue.ts'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { checkJobFrames, steppingHandler } from '../helpers/frames.ts'
import { startEngine } from '../helpers/jobs.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
await app.listen({ host: '127.0.0.1', port: 0 })
const port = (app.server.address() as { port: number }).port
const alice = await createUser(app)
const bob = await createUser(app)

function connect (path: string, headers: Record<string, string>): Promise<{ ws: WebSocket, frames: any[], next: (pred: (f: any) => boolean, timeoutMs?: number) => Promise<any> }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, { headers })
    const frames: any[] = []
    const waiters: Array<() => void> = []
    ws.on('message', (data) => { frames.push(JSON.parse(String(data))); for (const w of waiters.splice(0)) w() })
    ws.on('open', () => resolve({
      ws,
      frames,
      next: (pred, timeoutMs = 5000) => new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no frame')), timeoutMs)
        const check = () => { const f = frames.find(pred); if (f) { clearTimeout(timer); resolve(f) } else waiters.push(check) }
        check()
      })
    }))
    ws.on('unexpected-response', (_req, res) => reject(Object.assign(new Error('refused'), { status: res.statusCode })))
    ws.on('error', reject)
  })
}

const enqueue = (ownerId: string) => app.prisma.$transaction(tx => enqueueJob(tx, { ownerId, operation: 'server_clone', runAt: new Date(Date.now() + 3_600_000) }))

t.test('authenticate_asynchronous sets a 2-minute async_auth cookie that opens the websocket', async t => {
  const res = await client(app, alice).post('/api/2.0/accounts/action/?do=authenticate_asynchronous', {})
  t.equal(res.statusCode, 200)
  t.same(res.json(), {})
  const cookie = String(res.headers['set-cookie'])
  t.match(cookie, /^async_auth=[^;]+\|\d+\|[0-9a-f]{64}; expires=[^;]+; Max-Age=120; Path=\//)
  const { ws, next } = await connect('/2.0/websocket', { cookie: cookie.split(';')[0] })
  t.teardown(() => ws.close())
  const job = await enqueue(alice.id)
  const frame = await next(f => f.resource_uri === `/api/2.0/jobs/${job.id}/`)
  t.same(Object.keys(frame).sort(), ['change', 'object', 'resource_type', 'resource_uri'])
  t.equal(frame.change, 'added', 'the frame names its change')
  t.equal(frame.resource_type, 'jobs')
  t.equal(frame.object.uuid, job.id)
  t.equal(frame.object.operation, 'server_clone')
})

t.test('Basic auth on the upgrade works on every path; bad credentials are refused', async t => {
  for (const path of ['/websocket', '/api/2.0/websocket']) {
    const { ws } = await connect(path, { authorization: alice.authorization })
    ws.close()
  }
  const none = await connect('/websocket', {}).catch(e => e)
  t.equal(none.status, 401)
  const forged = await connect('/websocket', { cookie: `async_auth=${Buffer.from(alice.id).toString('base64')}|${Math.floor(Date.now() / 1000)}|${'0'.repeat(64)}` }).catch(e => e)
  t.equal(forged.status, 401, 'a forged cookie is refused')
  t.equal((await app.inject({ method: 'POST', url: '/api/2.0/accounts/action/?do=authenticate_asynchronous' })).statusCode, 401)
})

t.test('a handshake ws refuses (bad Sec-WebSocket-Key or -Version) is a CloudSigma 400 naming the header', async t => {
  const handshake = (headers: string) => new Promise<string>((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(`GET /websocket HTTP/1.1\r\nHost: x\r\nAuthorization: ${alice.authorization}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n${headers}\r\n`))
    let out = ''
    socket.on('data', d => { out += d.toString('latin1') })
    socket.on('close', () => resolve(out))
    socket.on('error', reject)
  })
  const cases: Array<[string, string]> = [
    ['Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bad\r\n', 'Sec-WebSocket-Key'],
    ['Sec-WebSocket-Version: 99\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n', 'Sec-WebSocket-Version']
  ]
  for (const [headers, point] of cases) {
    const out = await handshake(headers)
    t.match(out, /^HTTP\/1.1 400 /, `${point}: 400`)
    t.match(out, /content-type: application\/json/i, `${point}: JSON`)
    t.match(JSON.parse(out.slice(out.indexOf('\r\n\r\n') + 4)), [{ error_type: 'validation', error_point: point }], `${point}: the error names the header`)
  }
  t.match(await handshake('Sec-WebSocket-Version: 99\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n'), /sec-websocket-version: 13, 8/i, 'the versions it takes are listed')
})

t.test('an async_auth cookie that is not valid percent-encoding is no cookie: 401, or Basic auth decides', async t => {
  for (const path of ['/websocket', '/2.0/websocket', '/api/2.0/websocket']) {
    for (const cookie of ['async_auth=%E0%A4%A', 'a=b; async_auth=%']) {
      const refused = await connect(path, { cookie }).catch(e => e)
      t.equal(refused.status, 401, `${path} ${cookie}: upgrade refused`)
      const plain = await app.inject({ method: 'GET', url: path, headers: { cookie } })
      t.equal(plain.statusCode, 401, `${path} ${cookie}: no upgrade: ${plain.statusCode}`)
    }
    const { ws } = await connect(path, { cookie: 'async_auth=%E0%A4%A', authorization: alice.authorization })
    ws.close()
  }
})

t.test('a plain GET of a websocket path (no Upgrade) answers a CloudSigma error, not an empty 404', async t => {
  for (const path of ['/websocket', '/2.0/websocket', '/api/2.0/websocket']) {
    const res = await app.inject({ method: 'GET', url: path, headers: { authorization: alice.authorization } })
    t.equal(res.statusCode, 426, `${path}: ${res.statusCode} ${res.body.slice(0, 120)}`)
    t.equal(res.headers.upgrade, 'websocket')
    const body = res.body ? res.json() : undefined
    t.ok(Array.isArray(body) && typeof body[0]?.error_type === 'string' && typeof body[0]?.error_message === 'string' && 'error_point' in body[0], `${path}: error array`)
  }
  // over a real connection too, and without credentials it is the 401 first
  const real = await fetch(`http://127.0.0.1:${port}/api/2.0/websocket`, { headers: { authorization: alice.authorization } })
  t.equal(real.status, 426)
  t.equal(((await real.json()) as any)[0].error_type, 'validation')
  const anonymous = await fetch(`http://127.0.0.1:${port}/websocket`)
  t.equal(anonymous.status, 401)
  t.equal(((await anonymous.json()) as any)[0].error_type, 'permission')
})

t.test('each account hears only its own objects', async t => {
  const a = await connect('/websocket', { authorization: alice.authorization })
  const b = await connect('/websocket', { authorization: bob.authorization })
  t.teardown(() => { a.ws.close(); b.ws.close() })
  const ja = await enqueue(alice.id)
  const jb = await enqueue(bob.id)
  await a.next(f => f.resource_uri.includes(ja.id))
  await b.next(f => f.resource_uri.includes(jb.id))
  await new Promise(resolve => setTimeout(resolve, 200))
  t.notOk(a.frames.some(f => f.resource_uri.includes(jb.id)))
  t.notOk(b.frames.some(f => f.resource_uri.includes(ja.id)))
})

t.test('one frame per change: each frame names its change, a job\'s success arrives once', async t => {
  await startEngine(t, app, { server_stop: steppingHandler }, { databaseUrl, pollMs: 100 })
  const s = await connect('/websocket', { authorization: alice.authorization })
  t.teardown(() => s.ws.close())
  const ids = []
  for (let i = 0; i < 3; i++) ids.push((await app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: alice.id, operation: 'server_stop' }))).id)
  for (const id of ids) await s.next(f => f.resource_uri === `/api/2.0/jobs/${id}/` && f.object?.state === 'success', 15_000)
  // frames that would repeat the success come right behind it
  await new Promise(resolve => setTimeout(resolve, 500))
  t.ok(s.frames.every(f => ['added', 'changed', 'removed'].includes(f.change)), 'every frame names its change')
  for (const id of ids) checkJobFrames(t, s.frames.filter(f => f.resource_uri === `/api/2.0/jobs/${id}/`))
})

t.test('a server created, edited and deleted: added, changed, then removed with {uuid, resource_uri}', async t => {
  const s = await connect('/websocket', { authorization: alice.authorization })
  t.teardown(() => s.ws.close())
  const api = client(app, alice)
  const created = await api.post('/api/2.0/servers/', { name: 'web', cpu: 1000, mem: 512 * 1024 * 1024, vnc_password: 'secret' })
  t.equal(created.statusCode, 201)
  const uuid = created.json().objects[0].uuid
  const uri = `/api/2.0/servers/${uuid}/`
  await s.next(f => f.resource_uri === uri && f.change === 'added')
  t.equal((await api.put(uri, { name: 'web2', cpu: 1000, mem: 512 * 1024 * 1024, vnc_password: 'secret' })).statusCode, 200)
  await s.next(f => f.resource_uri === uri && f.object?.name === 'web2')
  t.equal((await api.delete(uri)).statusCode, 204)
  const removed = await s.next(f => f.resource_uri === uri && f.change === 'removed')
  t.same(Object.keys(removed).sort(), ['change', 'object', 'resource_type', 'resource_uri'], 'a removed frame carries what is gone')
  t.same(removed.object, { uuid: uri.split('/').at(-2), resource_uri: uri }, 'its object is {uuid, resource_uri} (decisions.md)')
  t.equal(removed.resource_type, 'servers')
  await new Promise(resolve => setTimeout(resolve, 300))
  const frames = s.frames.filter(f => f.resource_uri === uri)
  t.same(frames.map(f => f.change), ['added', 'changed', 'removed'], 'one frame per change, each naming it')
  t.equal(frames[0].object.name, 'web')
})
