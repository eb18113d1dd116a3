// GET /servers/availability_groups/[{uuid}/] (spec §3.3): the caller's servers that are on a compute
// host, grouped by the host they share. A stopped server is on none. The built-in driver runs no
// guests, so every running server shares its one host; a driver that knows its hosts says so.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { MINIMAL } from './helpers.ts'

const { app } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const bob = await createUser(app)
const api = client(app, alice)
const bobApi = client(app, bob)
const BASE = '/api/2.0/servers/availability_groups/'

async function server (as: typeof api, status = 'stopped'): Promise<string> {
  const res = await as.post('/api/2.0/servers/', MINIMAL)
  if (res.statusCode !== 201) throw new Error(`${res.statusCode} ${res.body}`)
  const id = res.json().objects[0].uuid as string
  if (status !== 'stopped') await app.prisma.server.update({ where: { id }, data: { status, activeSince: new Date() } })
  return id
}

const running = [await server(api, 'running'), await server(api, 'running'), await server(api, 'starting'), await server(api, 'paused')].sort()
const stopped = await server(api)
const bobsRunning = await server(bobApi, 'running')

t.test('every running server of the caller shares the recording driver\'s one host; stopped ones are on none', async t => {
  for (const url of [BASE, BASE.slice(0, -1)]) {
    const res = await api.get(url)
    t.equal(res.statusCode, 200, `${url}: ${res.body}`)
    t.same(res.json(), [running], url)
  }
  t.notOk((await api.get(BASE)).json().flat().includes(bobsRunning), "another account's server never appears")
  t.same((await bobApi.get(BASE)).json(), [[bobsRunning]])
})

t.test('one server: its host\'s servers, itself included; [] when it is not running', async t => {
  for (const id of running) t.same((await api.get(`${BASE}${id}/`)).json(), running, id)
  const res = await api.get(`${BASE}${stopped}`)
  t.equal(res.statusCode, 200)
  t.same(res.json(), [])
})

t.test("an unknown or another account's server is 404 notexist", async t => {
  for (const id of [bobsRunning, randomUUID()]) {
    const res = await api.get(`${BASE}${id}/`)
    t.equal(res.statusCode, 404)
    t.same(res.json(), [{ error_type: 'notexist', error_message: res.json()[0].error_message, error_point: 'uuid' }])
  }
  t.equal((await api.get(`${BASE}x/`)).statusCode, 400, 'a malformed uuid')
  t.equal((await app.inject({ method: 'GET', url: `${BASE}${running[0]}/` })).statusCode, 401)
})

t.test('a driver that knows its hosts groups by them; a guest it leaves out is on the driver\'s own host', async t => {
  const [a, b, c, d] = running
  const hosts = new Map([[a, 'h1'], [b, 'h2'], [c, 'h1']])
  let asked: string[] = []
  app.hypervisor.hosts = async (ids) => { asked = ids; return hosts }
  t.teardown(() => { delete app.hypervisor.hosts })
  t.same((await api.get(BASE)).json(), [[a, c], [b], [d]])
  t.same(asked, running, 'the driver is asked about the caller\'s servers on a host only')
  t.same((await api.get(`${BASE}${c}/`)).json(), [a, c])
  t.same((await api.get(`${BASE}${b}/`)).json(), [b])
})

t.test('the static path is not a server: other methods are 405; the server routes still work', async t => {
  for (const method of ['PUT', 'DELETE', 'POST'] as const) {
    const res = await api.raw(method, BASE, {})
    t.equal(res.statusCode, 405, `${method} ${BASE}`)
    t.equal(res.headers.allow, 'GET, HEAD')
  }
  t.equal((await api.raw('DELETE', `${BASE}${stopped}/`)).statusCode, 405)
  t.equal((await api.get(`/api/2.0/servers/${stopped}/`)).json().uuid, stopped, 'nothing was deleted')
})
