// Authentication is decided on the matched route: every operation of the OpenAPI document, under
// its own spelling and under encoded, case, double-slash and trailing-dot variants, answers 401
// without credentials (404 for token routes and for paths no route matches, 405 for a spelling
// that only another method's route matches), never 2xx or 5xx.
import fs from 'node:fs'
import t from 'tap'
import { buildTestApp } from '../helpers/app.ts'

const { app } = await buildTestApp(t, { runWorkers: false })
const doc = JSON.parse(fs.readFileSync(new URL('../../openapi/openapi.json', import.meta.url), 'utf8')) as {
  paths: Record<string, Record<string, { security?: unknown[] }>>
}
const UUID = '0b7c3f5e-1f2a-4c3d-9e8f-0123456789ab'
const METHODS = ['get', 'post', 'put', 'delete']

function concrete (path: string): string {
  return path.replace(/\{uuid\}/g, UUID).replace(/\{token\}/g, 'A'.repeat(43)).replace(/\{name\}/g, 'img')
}

/** Spellings the router may or may not treat as the same route. */
function variants (path: string): Array<{ url: string, matches: boolean }> {
  return [
    { url: path, matches: true },
    { url: path.replace('/api/', '/%61pi/'), matches: true },
    { url: path.replace('/api/2.0/', '/%61%70%69/2%2E0/'), matches: true },
    { url: path.replace('/api/', '/API/'), matches: false },
    { url: path.replace('/api/2.0/', '/Api/2.0/'), matches: false },
    { url: '/' + path, matches: false },
    { url: path.replace('/2.0/', '//2.0/'), matches: false },
    { url: path.replace('/2.0/', '/2.0./'), matches: false },
    { url: path.replace(/\/$/, '/.'), matches: false },
    { url: path.replace(/\/$/, '.'), matches: false }
  ]
}

t.test('every operation under every spelling, without credentials', async t => {
  let checked = 0
  for (const [path, ops] of Object.entries(doc.paths)) {
    if (!path.startsWith('/api/')) continue
    for (const method of METHODS) {
      const op = ops[method]
      if (!op) continue
      const isToken = Array.isArray(op.security) && op.security.length === 0
      for (const { url, matches } of variants(concrete(path))) {
        const res = await app.inject({
          method: method.toUpperCase() as 'GET',
          url,
          headers: { 'content-type': isToken ? 'application/octet-stream' : 'application/json' },
          ...(method === 'get' ? {} : { payload: isToken ? '' : '{}' })
        })
        const what = `${method.toUpperCase()} ${url}`
        // a variant the router happens to match must be treated exactly like the canonical path
        const expected = isToken ? 404 : 401
        if (matches) t.equal(res.statusCode, expected, what)
        // (POST /drives/upload. is the path of GET /drives/{uuid}/: 405)
        else t.ok(res.statusCode === expected || res.statusCode === 404 || res.statusCode === 405, `${what}: ${res.statusCode}`)
        const body = res.json()
        t.ok(Array.isArray(body) && typeof body[0]?.error_type === 'string', `${what}: CloudSigma error array`)
        checked++
      }
    }
  }
  t.ok(checked > 300, `${checked} requests`)
})

t.test('a wrong password and unknown paths reveal nothing', async t => {
  const auth = 'Basic ' + Buffer.from('nobody@example.com:wrong').toString('base64')
  const known = await app.inject({ url: '/api/2.0/drives/', headers: { authorization: auth } })
  t.equal(known.statusCode, 401)
  const unknown = await app.inject({ url: '/api/2.0/nothing-here/' })
  const unknownAuthed = await app.inject({ url: '/api/2.0/nothing-here/', headers: { authorization: auth } })
  t.equal(unknown.statusCode, 404)
  t.same(unknown.json(), unknownAuthed.json(), 'an unmatched path answers the same with or without credentials')
})
