// Request logs never hold a link token or the Authorization header, at any log level.
import { Writable } from 'node:stream'
import Fastify from 'fastify'
import t from 'tap'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { app as service, serverOptions } from '../../src/app.ts'
import { buildTestApp, client, createUser } from '../helpers/app.ts'

const { config, databaseUrl } = await buildTestApp(t, { runWorkers: false })
let captured = ''
const stream = new Writable({ write (chunk, _enc, cb) { captured += chunk.toString(); cb() } })
const app = Fastify(serverOptions(config, { level: 'trace', stream })).withTypeProvider<TypeBoxTypeProvider>()
await app.register(service, { config, databaseUrl, runWorkers: false })
await app.ready()
t.teardown(() => app.close())
const user = await createUser(app)
const api = client(app, user)

t.test('tokens and credentials stay out of the log', async t => {
  const init = await api.post('/api/2.0/initupload/', { name: 'u', size: 4 })
  t.equal(init.statusCode, 201)
  const link = await api.post(`/api/2.0/drives/${init.json().objects[0].uuid}/action/?do=upload_chunk`, { chunk_number: 0, chunk_size: 4 })
  t.equal(link.statusCode, 202)
  const url = new URL(link.json().link, 'http://x')
  const token = url.pathname.split('/').filter(Boolean).at(-1) as string
  t.ok(token.length >= 16, 'a token')
  const sent = await app.inject({ method: 'POST', url: url.pathname, headers: { 'content-type': 'application/octet-stream' }, payload: 'abcd' })
  t.equal(sent.statusCode, 200)
  const fake = 'Sup3rS3cretDownloadTokenValue'
  t.equal((await app.inject(`/api/2.0/downloads/${fake}/`)).statusCode, 404)
  t.equal((await app.inject(`/api/2.0/downloads/${fake}%ZZ/`)).statusCode, 400)
  // the upload link takes PUT and POST: a GET of it is 405
  t.equal((await app.inject(`/api/2.0/uploads/${fake}/?x=1`)).statusCode, 405)
  t.ok(captured.includes('/api/2.0/uploads/[redacted]'), 'the request was logged, redacted')
  t.notOk(captured.includes(token), 'no upload token in the log')
  t.notOk(captured.includes(fake), 'no download token in the log')
  const b64 = user.authorization.slice('Basic '.length)
  t.notOk(captured.includes(b64) || captured.includes(user.password), 'no credentials in the log')
})

t.test('tokens stay out of the log under any spelling the router accepts', async t => {
  const init = await api.post('/api/2.0/initupload/', { name: 'v', size: 4 })
  t.equal(init.statusCode, 201)
  const link = await api.post(`/api/2.0/drives/${init.json().objects[0].uuid}/action/?do=upload_chunk`, { chunk_number: 0, chunk_size: 4 })
  t.equal(link.statusCode, 202)
  const token = new URL(link.json().link, 'http://x').pathname.split('/').filter(Boolean).at(-1) as string
  captured = ''
  const sent = await app.inject({ method: 'PUT', url: `/api/2.0/%75ploads/${token}/`, headers: { 'content-type': 'application/octet-stream' }, payload: 'abcd' })
  t.equal(sent.statusCode, 200, 'the percent-encoded path is routed')
  t.match(captured, /"url":"\/api\/2\.0\/%75ploads\/\[redacted\]\/"/, 'the request was logged, redacted')
  const fake = 'An0therS3cretDownloadTokenValue'
  for (const url of [`/api/2.0/%64ownloads/${fake}/`, `/api/2.0/%64%6F%57%4e%6c%6f%61%64%73/${fake}/`, `/api/2.0/DOWNLOADS/${fake}/`,
    `/api/2.0//downloads//${fake}/`, `/api/2.0%2Fdownloads%2F${fake}/`, `/api/2.0/%2564ownloads/${fake}/`, `/api/2.0/downloads/${fake}?next=/uploads/${fake}`]) {
    await app.inject(url)
  }
  t.ok(captured.includes('%64ownloads/[redacted]'), 'the download requests were logged, redacted')
  t.notOk(captured.includes(token), 'no upload token in the log')
  t.notOk(captured.includes(fake), 'no download token in the log')
})
