// gzip (spec §1.3: "gzip is used when the request has Accept-Encoding: gzip"): JSON answers from
// 1 KiB up come back gzip and decode to the same JSON; small ones, 204s and HEADs stay plain;
// image downloads (whole or ranged) are never compressed and stay byte-identical; server-sent
// events still deliver each frame as it happens.
import { randomBytes } from 'node:crypto'
import http from 'node:http'
import { gunzipSync } from 'node:zlib'
import t from 'tap'
import { buildTestApp, client, createUser, eventually } from '../helpers/app.ts'
import { openSse } from '../helpers/sse.ts'
import { sha256 } from '../transfers/helpers.ts'

const { app } = await buildTestApp(t)
await app.listen({ host: '127.0.0.1', port: 0 })
const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
const alice = await createUser(app)
const api = client(app, alice)
const GZIP = { 'accept-encoding': 'gzip, deflate, br' }

const made: string[] = []
for (let i = 0; i < 8; i++) {
  const res = await api.post('/api/2.0/drives/', { name: `drive-${i}`, size: 1024 * 1024, media: 'disk' })
  made.push(res.json().objects[0].uuid)
}
await eventually(async () => (await api.get('/api/2.0/drives/?status=unmounted&limit=0')).json().meta.total_count === made.length)

t.test('a list with Accept-Encoding: gzip comes back gzip and decodes to the same JSON', async t => {
  const plain = await api.get('/api/2.0/drives/detail/?limit=0')
  t.equal(plain.statusCode, 200)
  t.notOk(plain.headers['content-encoding'], 'no Accept-Encoding: plain')
  t.ok(plain.rawPayload.length > 1024, `a list worth compressing (${plain.rawPayload.length} bytes)`)
  const zipped = await api.get('/api/2.0/drives/detail/?limit=0', GZIP)
  t.equal(zipped.statusCode, 200)
  t.equal(zipped.headers['content-encoding'], 'gzip')
  t.match(zipped.headers.vary, /accept-encoding/i)
  t.match(zipped.headers['content-type'], /^application\/json; charset=utf-8/)
  t.equal(Number(zipped.headers['content-length']), zipped.rawPayload.length, 'Content-Length is the compressed size')
  t.ok(zipped.rawPayload.length < plain.rawPayload.length, 'smaller')
  const decoded = JSON.parse(gunzipSync(zipped.rawPayload).toString('utf8'))
  t.same(decoded, plain.json(), 'the same JSON')
  t.ok(zipped.headers['x-request-id'], 'the other headers are kept')
  for (const ae of ['identity', 'br', 'gzip;q=0']) {
    t.notOk((await api.get('/api/2.0/drives/detail/?limit=0', { 'accept-encoding': ae })).headers['content-encoding'], `Accept-Encoding: ${ae} stays plain`)
  }
})

t.test('small answers, errors, 204s and HEADs stay plain', async t => {
  const small = await api.get(`/api/2.0/drives/${made[0]}/?fields=uuid`, GZIP)
  t.equal(small.statusCode, 200)
  t.notOk(small.headers['content-encoding'], 'under 1 KiB')
  t.same(small.json(), { uuid: made[0] })
  const missing = await api.get('/api/2.0/drives/00000000-0000-4000-8000-000000000000/', GZIP)
  t.equal(missing.statusCode, 404)
  t.equal(missing.json()[0].error_type, 'notexist', 'an error is still the plain CloudSigma array')
  const head = await app.inject({ method: 'HEAD', url: '/api/2.0/drives/detail/?limit=0', headers: { authorization: alice.authorization, ...GZIP } })
  t.equal(head.statusCode, 200)
  t.equal(head.rawPayload.length, 0, 'HEAD has no body')
  t.notOk(head.headers['content-encoding'], 'HEAD describes the plain representation')
  t.equal(Number(head.headers['content-length']), (await api.get('/api/2.0/drives/detail/?limit=0')).rawPayload.length)
  const deleted = await api.delete(`/api/2.0/drives/${made.pop()}/`, undefined, GZIP)
  t.equal(deleted.statusCode, 204)
  t.notOk(deleted.headers['content-encoding'], 'a 204 is not encoded')
  t.equal(deleted.rawPayload.length, 0)
})

t.test('a download is never compressed: byte-identical, whole or ranged, with its Content-Length', async t => {
  // compressible bytes: gzip would shrink them if it were applied
  const data = Buffer.concat([Buffer.alloc(256 * 1024, 'a'), randomBytes(4096)])
  const up = await app.inject({ method: 'PUT', url: '/api/2.0/drives/upload/image.raw', headers: { authorization: alice.authorization, 'content-type': 'application/octet-stream' }, payload: data })
  t.equal(up.statusCode, 201, up.body)
  const uuid = up.body
  const whole = await api.get(`/api/2.0/drives/${uuid}/download/`, GZIP)
  t.equal(whole.statusCode, 200)
  t.notOk(whole.headers['content-encoding'])
  t.equal(whole.headers['content-type'], 'application/octet-stream')
  t.equal(Number(whole.headers['content-length']), data.length)
  t.equal(sha256(whole.rawPayload), sha256(data), 'byte-identical')
  const part = await api.get(`/api/2.0/drives/${uuid}/download/`, { ...GZIP, range: 'bytes=100-1099' })
  t.equal(part.statusCode, 206)
  t.notOk(part.headers['content-encoding'])
  t.ok(part.rawPayload.equals(data.subarray(100, 1100)), 'the range, as bytes of the image')
  const head = await app.inject({ method: 'HEAD', url: `/api/2.0/drives/${uuid}/download/`, headers: { authorization: alice.authorization, ...GZIP } })
  t.equal(head.statusCode, 200)
  t.notOk(head.headers['content-encoding'])
  t.equal(Number(head.headers['content-length']), data.length)
})

t.test('server-sent events with Accept-Encoding: gzip still deliver each frame as it happens', async t => {
  const sse = await openSse(base, '/api/2.0/jobs/events/', { authorization: alice.authorization, ...GZIP })
  t.teardown(() => sse.close())
  t.equal(sse.status, 200)
  await new Promise(resolve => setTimeout(resolve, 100))
  for (const name of ['first', 'second']) {
    const at = Date.now()
    await api.put(`/api/2.0/drives/${made[0]}/`, { name })
    const frame = await sse.next(f => f.event === 'drives' && f.data.object?.name === name, 5000)
    t.equal(frame.data.object.uuid, made[0], `the ${name} change's frame`)
    t.ok(Date.now() - at < 5000, `arrived in ${Date.now() - at} ms, with nothing else sent after it`)
  }
  const headers = await new Promise<http.IncomingHttpHeaders>((resolve, reject) => {
    const req = http.get(base + '/api/2.0/jobs/events/', { headers: { accept: 'text/event-stream', authorization: alice.authorization, ...GZIP } }, (res) => {
      resolve(res.headers)
      req.destroy()
    })
    req.on('error', reject)
  })
  t.notOk(headers['content-encoding'], 'the stream is not encoded')
  t.match(headers['content-type'], /^text\/event-stream/)
})
