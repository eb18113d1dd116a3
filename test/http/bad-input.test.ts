// Input PostgreSQL or JavaScript cannot hold is a 400 `validation` naming its field, never a 500:
// prototype names as filters or orderings, numbers past their columns, dates past PostgreSQL's
// range, foreign cursors, NUL bytes and lone surrogates, malformed multipart bodies, JSON bodies
// that are not UTF-8 (400) or declare another charset (415); and the router's and Node's own
// client errors answer CloudSigma arrays.
import net from 'node:net'
import tap from 'tap'
const t = tap
import { buildTestApp, client, createUser } from '../helpers/app.ts'

const { app } = await buildTestApp(t, { runWorkers: false })
const user = await createUser(app)
const api = client(app, user)

function isErrorArray (body: unknown): boolean {
  return Array.isArray(body) && body.length > 0 && body.every(e => typeof e?.error_type === 'string' && typeof e?.error_message === 'string' && 'error_point' in e)
}

async function expect400 (t: Pick<typeof tap, 'equal' | 'ok'>, res: Awaited<ReturnType<typeof api.get>>, point: string | null, what: string) {
  t.equal(res.statusCode, 400, `${what}: ${res.statusCode} ${res.body.slice(0, 200)}`)
  const body = res.json()
  t.ok(isErrorArray(body), `${what}: error array`)
  t.equal(body[0]?.error_type, 'validation', `${what}: validation`)
  t.equal(body[0]?.error_point, point, `${what}: error_point`)
}

const LISTS = ['/api/2.0/drives/', '/api/2.0/drives/detail/', '/api/2.0/servers/', '/api/2.0/servers/detail/', '/api/2.0/jobs/']
const PROTO = ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf', 'isPrototypeOf']

t.test('prototype member names are neither filters nor orderings', async t => {
  for (const list of LISTS) {
    for (const name of PROTO) {
      const filtered = await api.get(`${list}?${name}=x&${name}__lt=1`)
      t.equal(filtered.statusCode, 200, `${list}?${name}= is an unknown parameter, ignored`)
      await expect400(t, await api.get(`${list}?order_by=${name}`), 'order_by', `${list}?order_by=${name}`)
      await expect400(t, await api.get(`${list}?order_by=-${name}`), 'order_by', `${list}?order_by=-${name}`)
    }
    // not a key of the object: refused like any unknown field (test/drives/list.test.ts)
    await expect400(t, await api.get(`${list}?fields=constructor,__proto__`), 'fields', `${list}?fields=constructor,__proto__`)
  }
})

t.test('a filter with an operator its field does not have is a 400, not a list left unfiltered', async t => {
  for (const [url, point] of [
    ['/api/2.0/jobs/?state__in=queued,started', 'state__in'],
    ['/api/2.0/jobs/?cursor=&created__range=2026-01-01,2026-02-01', 'created__range'],
    ['/api/2.0/drives/?status__in=unmounted', 'status__in'],
    ['/api/2.0/drives/detail/?tag__name=db', 'tag__name'],
    ['/api/2.0/servers/?name__startswith=a', 'name__startswith']
  ] as const) {
    const res = await api.get(url)
    await expect400(t, res, point, url)
    t.match(res.json()[0]?.error_message, /is not supported: .* takes /, `${url}: says what the field takes`)
  }
})

t.test('paging numbers past what PostgreSQL and JavaScript hold', async t => {
  for (const list of LISTS) {
    for (const param of ['limit', 'offset']) {
      for (const v of ['9223372036854775808', '1e21', '1e308', 'Infinity', '-Infinity', 'NaN', '2147483648']) {
        await expect400(t, await api.get(`${list}?${param}=${v}`), param, `${list}?${param}=${v}`)
      }
    }
  }
})

t.test('dates past their columns, integers past int8, foreign cursors', async t => {
  for (const q of ['created__gte=%2B275760-09-13T00:00:00Z', 'last_modified__lt=99999', 'created__lt=-000001-01-01T00:00:00Z', 'created=10000-01-01']) {
    const param = q.split('=')[0]
    await expect400(t, await api.get(`/api/2.0/jobs/?${q}`), param, q)
  }
  const cursor = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url')
  for (const c of [cursor({ k: new Date().toISOString(), id: 'not-a-uuid' }), cursor({ k: '+275760-09-13T00:00:00Z', id: '0b7c3f5e-1f2a-4c3d-9e8f-0123456789ab' }), cursor({ k: 1, id: 2 }), 'x\u00ff']) {
    await expect400(t, await api.get(`/api/2.0/jobs/?order_by=-last_modified&cursor=${encodeURIComponent(c)}`), 'cursor', `cursor ${c}`)
  }
})

t.test('numbers past their columns in bodies', async t => {
  const drive = await api.post('/api/2.0/drives/', { name: 'd', size: 1024 * 1024, media: 'disk' })
  t.equal(drive.statusCode, 201)
  const uuid = drive.json().objects[0].uuid
  await expect400(t, await api.post('/api/2.0/drives/', { name: 'd', size: 1e21, media: 'disk' }), 'size', 'drive size 1e21')
  await expect400(t, await api.post('/api/2.0/drives/', { name: 'd', size: 1024 * 1024, media: 'disk', iops: 2 ** 31 }), 'iops', 'iops 2^31')
  await expect400(t, await api.put(`/api/2.0/drives/${uuid}/`, { name: 'd', size: 1024 * 1024, media: 'disk', iops: 2 ** 40 }), 'iops', 'iops 2^40 on update')
  await expect400(t, await api.post('/api/2.0/initupload/', { name: 'u', size: 2 ** 60 }), 'size', 'initupload size 2^60')
  const up = await api.post('/api/2.0/initupload/', { name: 'u', size: 1024 })
  t.equal(up.statusCode, 201)
  await expect400(t, await api.post(`/api/2.0/drives/${up.json().objects[0].uuid}/action/?do=upload_chunk`, { chunk_number: 0, chunk_size: 2 ** 53 }), 'chunk_size', 'chunk_size 2^53')
})

const driveCount = async () => (await api.get('/api/2.0/drives/?limit=0')).json().meta.total_count as number

t.test('NUL bytes and lone surrogates in any text', async t => {
  const before = await driveCount()
  for (const bad of ['a\u0000b', 'a\ud800b', '\udc00', 'x\ud83d']) {
    const what = JSON.stringify(bad)
    await expect400(t, await api.post('/api/2.0/drives/', { name: bad, size: 1024 * 1024, media: 'disk' }), 'name', `drive name ${what}`)
    await expect400(t, await api.post('/api/2.0/drives/', { name: 'ok', size: 1024 * 1024, media: 'disk', meta: { k: bad } }), 'k', `meta value ${what}`)
    await expect400(t, await api.post('/api/2.0/drives/', { name: 'ok', size: 1024 * 1024, media: 'disk', meta: { [bad]: 'v' } }), bad.replace(/\0|[\ud800-\udfff]/g, '\ufffd'), `meta key ${what}`)
    await expect400(t, await api.post('/api/2.0/servers/', { name: bad, cpu: 1000, mem: 512 * 1024 * 1024, vnc_password: 'x' }), 'name', `server name ${what}`)
    await expect400(t, await api.put('/api/2.0/profile/', { clone_naming: bad }), 'clone_naming', `profile ${what}`)
  }
  await expect400(t, await api.get('/api/2.0/drives/?name=a%00b'), 'name', 'NUL in a filter')
  await expect400(t, await api.get('/api/2.0/drives/?name__contains=%00'), 'name__contains', 'NUL in a contains filter')
  await expect400(t, await api.get('/api/2.0/jobs/?operation=%00'), 'operation', 'NUL in a job filter')
  await expect400(t, await api.raw('POST', '/api/2.0/drives/upload/a%00b', '', { 'content-type': 'application/octet-stream', 'content-length': '0' }), 'name', 'NUL in an upload name')
  const multipart = multipartBody('B', [{ name: 'data', value: JSON.stringify({ method: 'drives.upload', params: [{ name: 'a\u0000b' }] }) }, { name: 'file', filename: 'f', value: 'abc' }])
  await expect400(t, await api.raw('POST', '/api/2.0/_upload/', multipart, { 'content-type': 'multipart/form-data; boundary=B' }), 'name', 'NUL in a multipart upload name')
  t.equal(await driveCount(), before, 'no drive was made')
})

t.test('JSON bodies: bytes that are not UTF-8 are a 400, another charset a 415 naming it, never a name of U+FFFD', async t => {
  const before = await driveCount()
  const post = (body: Buffer, type: string) => app.inject({ method: 'POST', url: '/api/2.0/drives/', headers: { authorization: user.authorization, 'content-type': type }, payload: body })
  const named = (name: Buffer) => Buffer.concat([Buffer.from('{"name": "'), name, Buffer.from('", "size": 1048576, "media": "disk"}')])
  // invalid bytes, an overlong '/', a surrogate's encoding, a sequence cut short
  for (const bad of [[0xff, 0xfe, 0xc0, 0xaf], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0x61, 0xe2, 0x82]]) {
    for (const type of ['application/json', 'application/json; charset=utf-8', 'application/json;charset="UTF8"']) {
      const what = `${Buffer.from(bad).toString('hex')} as ${type}`
      const res = await post(named(Buffer.from(bad)), type)
      await expect400(t, res, null, what)
      t.match(res.json()[0]?.error_message, /^Malformed JSON in the request body: it is not UTF-8/, `${what}: says why`)
    }
  }
  // a charset other than UTF-8 is refused, not decoded as UTF-8 (café in latin-1 was caf\ufffd)
  for (const type of ['application/json; charset=iso-8859-1', 'application/json; charset=UTF-16', 'application/json; charset=latin1']) {
    const res = await post(named(Buffer.from('café', 'latin1')), type)
    t.equal(res.statusCode, 415, type)
    t.equal(res.json()[0]?.error_type, 'validation')
    t.equal(res.json()[0]?.error_message, `Unsupported content type: ${type}`, `${type}: the message names the charset`)
  }
  t.equal(await driveCount(), before, 'no drive was made')
  // UTF-8, said or not, in any spelling
  for (const type of ['application/json', 'application/json; charset=utf-8', 'application/json; charset=UTF8', 'Application/JSON; Charset="utf-8"']) {
    const res = await post(named(Buffer.from('café ☃ 😀')), type)
    t.equal(res.statusCode, 201, `${type}: ${res.body.slice(0, 200)}`)
    t.equal(res.json().objects?.[0]?.name, 'café ☃ 😀', `${type}: the name as sent`)
  }
  // the parser still refuses prototype poisoning
  await expect400(t, await api.raw('POST', '/api/2.0/drives/', '{"name": "p", "size": 1048576, "media": "disk", "__proto__": {"x": 1}}'), null, '__proto__ in a body')
  await expect400(t, await api.raw('POST', '/api/2.0/drives/', '{"name": "p", "size": 1048576, "media": "disk", "constructor": {"prototype": {"x": 1}}}'), null, 'constructor.prototype in a body')
  // a type no parser takes: 415 naming it
  const form = await api.raw('POST', '/api/2.0/drives/', 'name=x', { 'content-type': 'application/x-www-form-urlencoded' })
  t.equal(form.statusCode, 415)
  t.equal(form.json()[0]?.error_message, 'Unsupported content type: application/x-www-form-urlencoded')
})

t.test('the Basic-auth email: NUL or bad UTF-8 is 401, without credentials being right', async t => {
  for (const email of ['a\u0000b@example.com', user.email + '\u0000']) {
    const res = await app.inject({ url: '/api/2.0/drives/', headers: { authorization: 'Basic ' + Buffer.from(`${email}:${user.password}`).toString('base64') } })
    t.equal(res.statusCode, 401, JSON.stringify(email))
    t.ok(isErrorArray(res.json()))
  }
  const raw = Buffer.concat([Buffer.from('a'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('@x.com:pw')]).toString('base64')
  const res = await app.inject({ url: '/api/2.0/drives/', headers: { authorization: 'Basic ' + raw } })
  t.equal(res.statusCode, 401)
})

function multipartBody (boundary: string, parts: Array<{ name: string, value: string, filename?: string }>): string {
  return parts.map(p => `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"${p.filename ? `; filename="${p.filename}"` : ''}\r\n` +
    (p.filename ? 'Content-Type: application/octet-stream\r\n' : '') + `\r\n${p.value}\r\n`).join('') + `--${boundary}--\r\n`
}

t.test('malformed multipart bodies are 400 and leave nothing behind', async t => {
  const before = await driveCount()
  const data = JSON.stringify({ method: 'drives.upload', params: [{ name: 'm' }] })
  const good = multipartBody('XyZ', [{ name: 'data', value: data }, { name: 'file', filename: 'f.img', value: 'hello world' }])
  const cases: Array<[string, string, string]> = [
    ['truncated in the file', good.slice(0, good.indexOf('hello') + 3), 'multipart/form-data; boundary=XyZ'],
    ['truncated in the data field', good.slice(0, 60), 'multipart/form-data; boundary=XyZ'],
    ['garbage', '\u0001\u0002garbage\r\n\r\n--', 'multipart/form-data; boundary=XyZ'],
    ['missing boundary', good, 'multipart/form-data'],
    ['empty boundary', good, 'multipart/form-data; boundary='],
    ['500-char boundary', multipartBody('b'.repeat(500), [{ name: 'data', value: data }]), `multipart/form-data; boundary=${'b'.repeat(500)}`],
    ['wrong boundary', good, 'multipart/form-data; boundary=other'],
    ['bad part header', '--XyZ\r\nContent-Disposition\r\n\r\nx\r\n--XyZ--\r\n', 'multipart/form-data; boundary=XyZ']
  ]
  for (const [what, payload, type] of cases) {
    const res = await api.raw('POST', '/api/2.0/_upload/', payload, { 'content-type': type })
    t.equal(res.statusCode, 400, `${what}: ${res.statusCode} ${res.body.slice(0, 200)}`)
    t.ok(isErrorArray(res.json()), `${what}: error array`)
  }
  t.equal(await driveCount(), before, 'no drive left behind')
})

t.test('router and HTTP parser errors answer CloudSigma arrays', async t => {
  for (const url of ['/api/2.0/drives/%ZZ/', '/api/2.0/drives/%C0%AF/', '/api/2.0/drives/%', `/api/2.0/drives/upload/${'x'.repeat(300)}`]) {
    const res = await app.inject({ method: url.includes('upload') ? 'POST' : 'GET', url, headers: { authorization: user.authorization } })
    t.ok(res.statusCode === 400 || res.statusCode === 414 || res.statusCode === 404, `${url.slice(0, 40)}: ${res.statusCode}`)
    t.ok(isErrorArray(res.json()), `${url.slice(0, 40)}: error array ${res.body.slice(0, 100)}`)
  }

  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as net.AddressInfo).port
  const rawRequest = (text: string) => new Promise<string>((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.end(text))
    let out = ''
    socket.on('data', d => { out += d.toString('latin1') })
    socket.on('close', () => resolve(out))
    socket.on('error', reject)
  })
  const cases: Array<[string, string, number]> = [
    ['bad Content-Length', 'POST /api/2.0/drives/ HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n', 400],
    ['two Content-Lengths', 'POST /api/2.0/drives/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab', 400],
    ['oversized headers', `GET /api/2.0/drives/ HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\n\r\n`, 431],
    ['oversized URL', `GET /api/2.0/drives/?q=${'a'.repeat(20 * 1024)} HTTP/1.1\r\nHost: x\r\n\r\n`, 431],
    ['not HTTP', 'HELLO\r\n\r\n', 400],
    ['an Expect other than 100-continue', 'POST /api/2.0/drives/ HTTP/1.1\r\nHost: x\r\nExpect: 999-x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}', 417],
    ['bad percent-encoding', 'GET /api/2.0/drives/%ZZ/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 400]
  ]
  for (const [what, text, status] of cases) {
    const out = await rawRequest(text)
    t.match(out, new RegExp(`^HTTP/1.1 ${status} `), `${what}: status`)
    const body = out.slice(out.indexOf('\r\n\r\n') + 4)
    let parsed: unknown
    try { parsed = JSON.parse(body) } catch { parsed = body }
    t.ok(isErrorArray(parsed), `${what}: error array (${body.slice(0, 120)})`)
  }
})

t.test('a urn:uuid: spelling is not a uuid: 400 at uuid in paths (as not-a-uuid is), 400 at job in the events query', async t => {
  const urn = 'urn:uuid:5f8292fc-936a-45f9-a1a1-b10ef2ffaae9'
  for (const [method, url] of [['GET', `/api/2.0/servers/${urn}/`], ['GET', `/api/2.0/jobs/${urn}/log/`], ['POST', `/api/2.0/jobs/${urn}/action/?do=cancel`],
    ['GET', `/api/2.0/drives/${urn}/`], ['GET', `/api/2.0/jobs/${urn}/`], ['GET', `/api/2.0/servers/${urn.toUpperCase()}/`]] as const) {
    await expect400(t, await app.inject({ method, url, headers: { authorization: user.authorization } }) as Awaited<ReturnType<typeof api.get>>, 'uuid', `${method} ${url}`)
  }
  await expect400(t, await api.get(`/api/2.0/jobs/events/?job=${urn}`), 'job', 'events ?job=urn:uuid:')
  await expect400(t, await api.get(`/api/2.0/jobs/events/?job=${urn.toUpperCase()}`), 'job', 'events ?job=URN:UUID:')
  // the canonical form, in either case, is still a uuid
  t.equal((await api.get(`/api/2.0/servers/${urn.slice(9).toUpperCase()}/`)).statusCode, 404, 'an upper-case uuid is a uuid')
})

t.test('drive names past 1024 characters: the same 400 at name from every way of making a drive', async t => {
  const before = await driveCount()
  const ok = await api.post('/api/2.0/drives/', { name: 'n'.repeat(1024), size: 1024 * 1024, media: 'disk' })
  t.equal(ok.statusCode, 201, '1024 characters are a name')
  const created = await driveCount()
  const reference = await api.post('/api/2.0/drives/', { name: 'n'.repeat(1025), size: 1024 * 1024, media: 'disk' })
  await expect400(t, reference, 'name', 'POST /drives/ 1025')
  for (const length of [1025, 5000, 100_000]) {
    const name = 'n'.repeat(length)
    const init = await api.post('/api/2.0/initupload/', { name, size: 1024 })
    await expect400(t, init, 'name', `initupload ${length}`)
    t.equal(init.json()[0]?.error_message, reference.json()[0].error_message, `initupload ${length}: the same message as POST /drives/`)
    const wrapped = await api.post('/api/2.0/initupload/', { objects: [{ name, size: 1024 }] })
    await expect400(t, wrapped, 'name', `initupload {objects} ${length}`)
    const multipart = multipartBody('B', [{ name: 'data', value: JSON.stringify({ method: 'drives.upload', params: [{ name }] }) }, { name: 'file', filename: 'f', value: 'abc' }])
    const res = await api.raw('POST', '/api/2.0/_upload/', multipart, { 'content-type': 'multipart/form-data; boundary=B' })
    if (length > 64 * 1024) {
      // past the 64 KiB field limit the data field is cut short, so it is no longer JSON: 400 at data
      await expect400(t, res, 'data', `multipart upload ${length}`)
      continue
    }
    await expect400(t, res, 'name', `multipart upload ${length}`)
    t.equal(res.json()[0]?.error_message, reference.json()[0].error_message, `multipart ${length}: the same message as POST /drives/`)
  }
  // the raw upload's name is a path segment: the router refuses one past its parameter limit before it could be a name
  const raw = await api.raw('POST', `/api/2.0/drives/upload/${'n'.repeat(1025)}`, 'abc', { 'content-type': 'application/octet-stream' })
  t.ok(raw.statusCode >= 400 && raw.statusCode < 500 && isErrorArray(raw.json()), `raw upload 1025: ${raw.statusCode}`)
  t.equal(await driveCount(), created, 'no drive was made past the 1024-character one')
  t.equal(created, before + 1)
})
