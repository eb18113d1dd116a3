// A path the API has, asked with a method it does not take, is 405 with an Allow header (spec
// §1.4), not the 404 that says the object does not exist; checked for every path of the OpenAPI
// document and every method it does not list there.
import fs from 'node:fs'
import t from 'tap'
import { buildTestApp, client, createUser } from '../helpers/app.ts'

const { app } = await buildTestApp(t, { runWorkers: false })
const doc = JSON.parse(fs.readFileSync(new URL('../../openapi/openapi.json', import.meta.url), 'utf8')) as {
  paths: Record<string, Record<string, unknown>>
}
const UUID = '0b7c3f5e-1f2a-4c3d-9e8f-0123456789ab'
const METHODS = ['get', 'post', 'put', 'patch', 'delete']
const concrete = (path: string): string => path.replace(/\{uuid\}/g, UUID).replace(/\{token\}/g, 'A'.repeat(43)).replace(/\{name\}/g, 'img')
const apiPaths = Object.keys(doc.paths).filter(p => p.startsWith('/api/'))
const patternOf = (path: string): RegExp => new RegExp('^' + path.replace(/[.]/g, '\\.').replace(/\{[^}]+\}/g, '[^/]+') + '$')

/** Whether another documented path takes `method` at `url` (DELETE /drives/detail/ is DELETE /drives/{uuid}/). */
const otherRouteTakes = (method: string, url: string): boolean => apiPaths.some(p => doc.paths[p][method] !== undefined && patternOf(p).test(url))

t.test('every documented path, with every method it does not list', async t => {
  let checked = 0
  for (const path of apiPaths) {
    const listed = METHODS.filter(m => doc.paths[path][m] !== undefined)
    const url = concrete(path)
    for (const method of METHODS.filter(m => !listed.includes(m))) {
      // a path with a parameter another route also matches is that route's (POST /drives/{uuid}/ may be
      // another documented POST); a static path is its own (DELETE /drives/detail/ is not a drive's DELETE)
      if (path.includes('{') && otherRouteTakes(method, url)) continue
      const res = await app.inject({ method: method.toUpperCase() as 'GET', url })
      const what = `${method.toUpperCase()} ${url}`
      t.equal(res.statusCode, 405, what)
      const body = res.json()
      t.equal(body[0]?.error_type, 'validation', `${what}: CloudSigma error array`)
      const allow = String(res.headers.allow ?? '').split(', ')
      for (const m of listed) t.ok(allow.includes(m.toUpperCase()), `${what}: Allow names ${m.toUpperCase()} (${allow.join(', ')})`)
      t.notOk(allow.includes(method.toUpperCase()), `${what}: Allow leaves out ${method.toUpperCase()}`)
      // a static path's Allow is its own route's: not the methods of `/drives/{uuid}/` for `/drives/detail/`
      if (!path.includes('{')) for (const m of METHODS.filter(m => !listed.includes(m))) t.notOk(allow.includes(m.toUpperCase()), `${what}: Allow leaves out ${m.toUpperCase()}, which the path does not take`)
      checked++
    }
  }
  t.ok(checked > 40, `${checked} requests`)
})

t.test('OPTIONS on every documented path answers the methods it takes (spec §1.1), with or without credentials', async t => {
  for (const path of apiPaths) {
    const listed = METHODS.filter(m => doc.paths[path][m] !== undefined)
    const url = concrete(path)
    const res = await app.inject({ method: 'OPTIONS', url })
    t.equal(res.statusCode, 204, `OPTIONS ${url}`)
    t.equal(res.body, '', `OPTIONS ${url}: no body`)
    const allow = String(res.headers.allow ?? '').split(', ')
    for (const m of listed) t.ok(allow.includes(m.toUpperCase()), `OPTIONS ${url}: Allow names ${m.toUpperCase()} (${allow.join(', ')})`)
  }
  t.equal((await app.inject({ method: 'OPTIONS', url: '/api/2.0/nothing-here/' })).statusCode, 404, 'an unknown path is still 404')
  const detail = await app.inject({ method: 'OPTIONS', url: '/api/2.0/drives/detail/' })
  t.equal(detail.headers.allow, 'GET, HEAD', '/drives/detail/ takes GET (and HEAD) only')
})

t.test('the same with credentials, for objects that exist or not; unknown paths stay 404', async t => {
  const user = await createUser(app)
  const api = client(app, user)
  const drive = (await api.post('/api/2.0/drives/', { name: 'd', size: 1024 ** 2, media: 'disk' })).json().objects[0].uuid as string
  const existing = await app.inject({ method: 'DELETE', url: '/api/2.0/jobs/' + UUID + '/', headers: { authorization: user.authorization } })
  const anonymous = await app.inject({ method: 'DELETE', url: '/api/2.0/jobs/' + UUID + '/' })
  t.equal(existing.statusCode, 405, 'DELETE /jobs/{uuid}/ with credentials')
  t.same(existing.json(), anonymous.json(), 'the answer depends on the path, not on who asks')
  t.equal(existing.headers.allow, anonymous.headers.allow)
  t.match(existing.json()[0].error_message, /^Method DELETE is not allowed here; this path takes GET/)
  const patchDrive = await app.inject({ method: 'PATCH', url: `/api/2.0/drives/${drive}/`, headers: { authorization: user.authorization } })
  t.equal(patchDrive.statusCode, 405, 'PATCH on an existing drive')
  t.match(patchDrive.headers.allow, /GET/)
  t.match(patchDrive.headers.allow, /PUT/)
  t.match(patchDrive.headers.allow, /DELETE/)
  t.equal((await app.inject({ method: 'PATCH', url: '/%61pi/2.0/drives/' })).statusCode, 405, 'an encoded spelling the router matches')
  t.equal((await app.inject({ method: 'DELETE', url: '/api/2.0/jobs/?limit=1' })).statusCode, 405, 'a query string does not change the path')
  for (const [method, url] of [['GET', '/api/2.0/nothing-here/'], ['DELETE', '/api/2.0/nothing-here/'], ['DELETE', '/API/2.0/jobs/'], ['PUT', '/api/2.0/jobs/x/y/z/']] as const) {
    const res = await app.inject({ method, url })
    t.equal(res.statusCode, 404, `${method} ${url}`)
    t.equal(res.headers.allow, undefined, `${method} ${url}: no Allow`)
  }
})
