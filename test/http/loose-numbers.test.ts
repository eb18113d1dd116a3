// Numbers sent as text are taken when written in decimal (pycloudsigma sends "size": "1024000000",
// spec §1.15), but not the other text the validator's coercion turned into numbers: "Infinity" and
// "1e400" passed every integer field's checks (500s from BigInt and PostgreSQL, a `?wait=` with no
// end), "0x10" resized a drive to 16 bytes, " " was 0, true was 1. Each is a 400 at its field now.
// And a `?wait=` ends when its client goes away.
import net from 'node:net'
import t, { type Test } from 'tap'
import { enqueueJob } from '../../src/engine/enqueue.ts'
import { buildTestApp, client, createUser } from '../helpers/app.ts'

const { app } = await buildTestApp(t, { runWorkers: false })
const user = await createUser(app)
const api = client(app, user)

const created = await api.post('/api/2.0/drives/', { name: 'n', size: 1048576, media: 'disk' })
const drive = (created.json().objects?.[0] ?? created.json()) as { uuid: string }
const server = (await api.post('/api/2.0/servers/', { name: 's', cpu: 1000, mem: 536870912, vnc_password: 'pw' })).json()
const serverUuid = (server.objects?.[0] ?? server).uuid as string

const refused = (t: Test, res: { statusCode: number, body: string, json: () => any }, point: string, what: string) => {
  t.equal(res.statusCode, 400, `${what}: ${res.statusCode} ${res.body.slice(0, 160)}`)
  t.equal(res.json()[0]?.error_type, 'validation', `${what}: validation`)
  t.equal(res.json()[0]?.error_point, point, `${what}: error_point`)
}

t.test('text that is not a decimal number is refused where a number goes', async t => {
  for (const bad of ['Infinity', '-Infinity', '1e400', '-1e400', '9e999', '0x10', '0b1', ' ', 'NaN', true]) {
    refused(t, await api.post('/api/2.0/drives/', { name: 'x', size: 1048576, media: 'disk', iops: bad }), 'iops', `create iops ${String(bad)}`)
    refused(t, await api.post('/api/2.0/drives/', { name: 'x', size: bad, media: 'disk' }), 'size', `create size ${String(bad)}`)
    refused(t, await api.put(`/api/2.0/drives/${drive.uuid}/`, { size: bad }), 'size', `update size ${String(bad)}`)
    refused(t, await api.put(`/api/2.0/drives/${drive.uuid}/`, { iops: bad }), 'iops', `update iops ${String(bad)}`)
    refused(t, await api.post('/api/2.0/servers/', { name: 's', cpu: bad, mem: 536870912, vnc_password: 'pw' }), 'cpu', `server cpu ${String(bad)}`)
    refused(t, await api.put(`/api/2.0/servers/${serverUuid}/`, { name: 's', cpu: 1000, mem: bad, vnc_password: 'pw' }), 'mem', `server mem ${String(bad)}`)
  }
  // a JSON number past a double's range parses as Infinity
  const raw = await app.inject({ method: 'POST', url: '/api/2.0/drives/', headers: { authorization: user.authorization, 'content-type': 'application/json' }, payload: '{"name":"x","size":1048576,"media":"disk","iops":1e400}' })
  refused(t, Object.assign(raw, { json: () => JSON.parse(raw.body) }), 'iops', 'create iops 1e400 as a JSON number')
  for (const q of ['Infinity', '1e400', '0x10', '%20']) {
    refused(t, await api.get(`/api/2.0/drives/?limit=${q}`), 'limit', `?limit=${q}`)
  }
  const d = await api.get(`/api/2.0/drives/${drive.uuid}/`)
  t.equal(d.json().size, 1048576, 'the drive kept its size')
  t.equal(d.json().iops, null, 'and its iops')
})

t.test('decimal text is still a number; a GET sent back whole is still accepted', async t => {
  const res = await api.post('/api/2.0/drives/', { name: 'text size', size: '2097152', media: 'disk' })
  t.equal(res.statusCode, 201, res.body.slice(0, 200))
  t.equal((res.json().objects?.[0] ?? res.json()).size, 2097152)
  t.equal((await api.get('/api/2.0/drives/?limit=1')).json().meta.limit, 1)
  const full = (await api.get(`/api/2.0/drives/${drive.uuid}/`)).json()
  const echoed = await api.put(`/api/2.0/drives/${drive.uuid}/`, { ...full, name: 'echoed' })
  t.equal(echoed.statusCode, 200, `iops null echoed back: ${echoed.body.slice(0, 200)}`)
})

t.test('?wait= with text that is not a decimal number is refused, not a wait with no end', async t => {
  const job = await app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: user.id, operation: 'drive_clone' }))
  for (const w of ['Infinity', '1e400', '0x10']) {
    const t0 = Date.now()
    refused(t, await api.get(`/api/2.0/jobs/${job.id}/?wait=${w}`), 'wait', `?wait=${w}`)
    t.ok(Date.now() - t0 < 5000, 'answered at once')
  }
})

t.test('a ?wait= ends when its client goes away', async t => {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as net.AddressInfo
  const job = await app.prisma.$transaction(tx => enqueueJob(tx, { ownerId: user.id, operation: 'drive_clone' }))
  // the wait reads the job again at least once a second while it lasts: count the pool's queries about it
  let reads = 0
  const pool = app.dbPool as unknown as { query: (...args: unknown[]) => unknown }
  const query = pool.query
  pool.query = function (this: unknown, ...args: unknown[]) {
    const values = Array.isArray(args[1]) ? args[1] : (args[0] as { values?: unknown[] } | null)?.values
    if (Array.isArray(values) && values.includes(job.id)) reads++
    return query.apply(this, args)
  }
  t.teardown(() => { pool.query = query })
  const auth = Buffer.from(`${user.email}:${user.password}`).toString('base64')
  const sock = net.connect(port, '127.0.0.1')
  await new Promise(resolve => sock.once('connect', resolve))
  sock.write(`GET /api/2.0/jobs/${job.id}/?wait=60 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic ${auth}\r\n\r\n`)
  await new Promise(resolve => setTimeout(resolve, 2500))
  t.ok(reads >= 2, `the wait reads the job while its client is there (${reads} reads in 2.5 s)`)
  sock.destroy()
  await new Promise(resolve => setTimeout(resolve, 1200))
  const gone = reads
  await new Promise(resolve => setTimeout(resolve, 3000))
  t.equal(reads - gone, 0, 'once the client left, the wait ended: no more reads of the job')
})
