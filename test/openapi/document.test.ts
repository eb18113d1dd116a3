// The committed OpenAPI document and client types are exactly what the routes produce.
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { ROOT } from '../setup/test-db.ts'
import { buildOpenApiDocument, clientTypes } from '../helpers/openapi.ts'

const doc = await buildOpenApiDocument()

t.test('openapi/openapi.json matches the routes (run `npm run openapi` after changing them)', async t => {
  const committed = JSON.parse(fs.readFileSync(path.join(ROOT, 'openapi/openapi.json'), 'utf8'))
  t.same(committed, doc)
})

t.test('openapi/client/schema.d.ts matches the document', async t => {
  const committed = fs.readFileSync(path.join(ROOT, 'openapi/client/schema.d.ts'), 'utf8')
  t.equal(committed, await clientTypes(doc))
})

t.test('the document describes the API as clients need it', async t => {
  const d = doc as { openapi: string, paths: Record<string, Record<string, { responses: Record<string, unknown>, security?: unknown, operationId?: string }>>, components: { schemas: Record<string, unknown>, securitySchemes: Record<string, unknown> } }
  t.match(d.openapi, /^3\.1/)
  t.ok(d.components.securitySchemes.basicAuth, 'Basic auth is declared')
  for (const name of ['Drive', 'Job', 'Errors', 'Ref', 'ListMeta']) t.ok(d.components.schemas[name], `component ${name}`)
  const ops = Object.entries(d.paths).flatMap(([p, methods]) => Object.entries(methods).map(([m, op]) => ({ p, m, op })))
  t.ok(ops.length > 30, `${ops.length} operations`)
  const ids = ops.map(o => o.op.operationId)
  t.equal(new Set(ids).size, ids.length, 'operationIds are unique')
  for (const { p, m, op } of ops.filter(o => o.p.startsWith('/api/2.0/'))) {
    t.ok(op.operationId, `${m} ${p} has an operationId`)
    t.ok(Object.keys(op.responses).some(code => code.startsWith('4')), `${m} ${p} documents its errors`)
  }
})

t.test('every ?do= action has a typed operation of its own at its wire URL', async t => {
  type Op = { operationId: string, parameters?: Array<{ in: string }>, responses: Record<string, { content?: Record<string, { schema: { $ref?: string } }> }> }
  const d = doc as { paths: Record<string, { post?: Op }> }
  const expected: Record<string, string[]> = {
    drives: ['clone', 'download', 'resize', 'upload_chunk'],
    servers: ['clone', 'close_vnc', 'open_vnc', 'shutdown', 'start', 'stop']
  }
  for (const [resource, names] of Object.entries(expected)) {
    for (const name of names) {
      const op = d.paths[`/api/2.0/${resource}/{uuid}/action/?do=${name}`]?.post
      t.match(op?.responses['202']?.content?.['application/json']?.schema.$ref, /^#\/components\/schemas\/\w+$/, `${resource} ?do=${name} answers a named schema`)
      t.notOk(op?.parameters?.some(p => p.in === 'query'), `${resource} ?do=${name} takes no query parameter a client would append after the key's`)
    }
  }
  t.equal(d.paths['/api/2.0/drives/{uuid}/action/?do=clone']?.post?.responses['202'].content?.['application/json'].schema.$ref, '#/components/schemas/DriveObjects')
  t.equal(d.paths['/api/2.0/drives/{uuid}/action/?do=download']?.post?.responses['202'].content?.['application/json'].schema.$ref, '#/components/schemas/DownloadLink')
})
