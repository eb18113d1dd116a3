// `npm run openapi`: writes openapi/openapi.json from the route schemas, and the TypeScript types
// of a client generated from it (openapi/client/schema.d.ts, used by openapi-fetch). The app is
// built against a throwaway database (the test server: DATABASE_URL or an embedded PostgreSQL).
import fs from 'node:fs'
import path from 'node:path'
import { ROOT } from '../test/setup/test-db.ts'
import { buildOpenApiDocument, clientTypes } from '../test/helpers/openapi.ts'

const doc = await buildOpenApiDocument()
const file = path.join(ROOT, 'openapi/openapi.json')
fs.mkdirSync(path.dirname(file), { recursive: true })
fs.writeFileSync(file, JSON.stringify(doc, null, 2) + '\n')
const types = path.join(ROOT, 'openapi/client/schema.d.ts')
fs.mkdirSync(path.dirname(types), { recursive: true })
fs.writeFileSync(types, await clientTypes(doc))
console.log(`wrote ${path.relative(process.cwd(), file)} (${Object.keys((doc as { paths: object }).paths).length} paths) and ${path.relative(process.cwd(), types)}`)
process.exit(0)
