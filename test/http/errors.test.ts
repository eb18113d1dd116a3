// Errors always leave as the CloudSigma array: our own, Fastify's (bad JSON, too large, schema
// validation), and unexpected ones, whose internals must not leak.
import t from 'tap'
import Fastify from 'fastify'
import { Type } from 'typebox'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { app as service, serverOptions } from '../../src/app.ts'
import { createBodyHook } from '../../src/http/bodies.ts'
import { errors } from '../../src/http/errors.ts'
import { buildTestApp, client, createUser } from '../helpers/app.ts'

// the real service plugin plus probe routes on the same instance, so the real error handler,
// parsers and auth apply to them
const { config, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const app = Fastify(serverOptions({ ...config, bodyLimit: 4096 }, false)).withTypeProvider<TypeBoxTypeProvider>()
await app.register(service, { config: { ...config, bodyLimit: 4096 }, databaseUrl, runWorkers: false })
const Thing = Type.Object({ name: Type.String(), size: Type.Integer({ minimum: 1 }) }, { additionalProperties: false })
app.post('/api/2.0/probe/', { preValidation: createBodyHook, schema: { body: Type.Object({ objects: Type.Array(Thing) }) } },
  async (request, reply) => reply.code(201).send({ objects: request.body.objects }))
app.put('/api/2.0/probe/:id/', { schema: { body: Thing } }, async (request) => request.body)
app.post('/api/2.0/probe/:id/action/', async (request) => ({ got: request.body }))
app.put('/api/2.0/probe/union/', {
  schema: { body: Type.Object({ media: Type.Optional(Type.Union([Type.Literal('disk'), Type.Literal('cdrom')])), iops: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.Null()])) }) }
}, async (request) => request.body)
app.get('/api/2.0/probe/boom/', async () => { throw new Error('secret connection string postgres://x:y@db') })
app.get('/api/2.0/probe/busy/', async () => { throw errors.busy('drive is being cloned', 'uuid') })
await app.ready()
t.teardown(() => app.close())
const user = await createUser(app)
const api = client(app, user)

t.test('malformed JSON is 400 validation', async t => {
  const res = await api.raw('POST', '/api/2.0/probe/', '{"name": ')
  t.equal(res.statusCode, 400)
  t.same(res.json(), [{ error_type: 'validation', error_message: 'Malformed JSON in the request body', error_point: null }])
})

t.test('schema violations name the field', async t => {
  const missing = await api.post('/api/2.0/probe/', { name: 'x' })
  t.equal(missing.statusCode, 400)
  t.equal(missing.json()[0].error_type, 'validation')
  t.equal(missing.json()[0].error_point, 'size')
  const wrong = await api.post('/api/2.0/probe/', { objects: [{ name: 'x', size: 0 }] })
  t.equal(wrong.json()[0].error_point, 'size')
})

t.test('a union no branch of which matched is described whole', async t => {
  const media = await api.put('/api/2.0/probe/union/', { media: 'tape' })
  t.same(media.json(), [{ error_type: 'validation', error_message: 'Invalid field media: must be "disk" or "cdrom"', error_point: 'media' }])
  const iops = await api.put('/api/2.0/probe/union/', { iops: -5 })
  t.same(iops.json(), [{ error_type: 'validation', error_message: 'Invalid field iops: must be an integer of at least 0 or null', error_point: 'iops' }])
  t.equal((await api.put('/api/2.0/probe/union/', { iops: null, media: 'cdrom' })).statusCode, 200)
})

t.test('create bodies in all three forms; numeric strings coerced; unknown fields dropped', async t => {
  const forms = [{ objects: [{ name: 'a', size: 1 }] }, [{ name: 'a', size: 1 }], { name: 'a', size: 1 }]
  for (const body of forms) {
    const res = await api.post('/api/2.0/probe/', body)
    t.equal(res.statusCode, 201)
    t.same(res.json(), { objects: [{ name: 'a', size: 1 }] })
  }
  const coerced = await api.put('/api/2.0/probe/x/', { name: 'a', size: '1024', status: 'mounted', owner: { uuid: 'x' } })
  t.equal(coerced.statusCode, 200)
  t.same(coerced.json(), { name: 'a', size: 1024 }, 'read-only fields ignored, string coerced to integer')
})

t.test('empty and null bodies on POST actions are {}', async t => {
  for (const payload of ['', 'null', '{}']) {
    const res = await api.raw('POST', '/api/2.0/probe/x/action/', payload)
    t.equal(res.statusCode, 200, `payload ${JSON.stringify(payload)}`)
    t.same(res.json(), { got: {} })
  }
})

t.test('too large bodies are refused with the error array', async t => {
  const res = await api.post('/api/2.0/probe/', { name: 'x'.repeat(10_000), size: 1 })
  t.equal(res.statusCode, 413)
  t.equal(res.json()[0].error_type, 'validation')
})

t.test('unsupported content types are refused', async t => {
  const res = await api.raw('POST', '/api/2.0/probe/', 'name=x', { 'content-type': 'application/x-www-form-urlencoded' })
  t.equal(res.statusCode, 415)
  t.equal(res.json()[0].error_type, 'validation')
})

t.test('500s never leak internals', async t => {
  const res = await api.get('/api/2.0/probe/boom/')
  t.equal(res.statusCode, 500)
  t.same(res.json(), [{ error_type: 'backend', error_message: 'Internal server error', error_point: null }])
  t.notMatch(res.body, /postgres|secret/)
})

t.test('catalogue errors keep their status and type', async t => {
  const res = await api.get('/api/2.0/probe/busy/')
  t.equal(res.statusCode, 503)
  t.same(res.json(), [{ error_type: 'concurrency', error_message: 'drive is being cloned', error_point: 'uuid' }])
})

t.test('a client that hangs up mid-body is 400, and 503 answers are warnings: neither logs an error', async t => {
  const { installErrorHandler, toApiError } = await import('../../src/http/error-handler.ts')
  // what Node's IncomingMessage fails with when the client goes away mid-body
  const aborted = Object.assign(new Error('aborted'), { code: 'ECONNRESET' })
  t.match(toApiError(aborted), { statusCode: 400, errorType: 'validation' }, 'a client abort is the request\'s fault')
  // a socket error of a connection (the database's) stays a server-side failure
  const socket = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET', errno: -104, syscall: 'read' })
  t.ok(toApiError(socket).statusCode >= 500, 'a socket error with a system call is not the client\'s')
  const lines: Array<{ level: number, msg: string }> = []
  const probe = Fastify({ logger: { level: 'info', stream: { write: (l: string) => { lines.push(JSON.parse(l)) } } } })
  installErrorHandler(probe)
  probe.get('/aborted', async () => { throw aborted })
  probe.get('/busy', async () => { throw errors.busy('drive is being cloned', 'uuid') })
  probe.get('/boom', async () => { throw new Error('boom') })
  t.teardown(() => probe.close())
  t.equal((await probe.inject('/aborted')).statusCode, 400)
  t.equal((await probe.inject('/busy')).statusCode, 503)
  const levelOf = (msg: string) => lines.find(l => l.msg === msg)?.level
  t.notOk(lines.some(l => l.level >= 50), 'no error-level line for a client abort or a 503')
  t.equal(levelOf('request refused for now'), 40, 'the 503 is a warning')
  t.equal((await probe.inject('/boom')).statusCode, 500)
  t.equal(levelOf('request failed'), 50, 'a real failure is still an error')
})
