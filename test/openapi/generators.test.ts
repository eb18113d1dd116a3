// Typed ?do= actions: clients generated from the committed document by openapi-typescript
// (+ openapi-fetch) and by @hey-api/openapi-ts type each action's body and result. A small
// TypeScript file per generator clones a drive (the result is a Drive: .uuid and .status compile)
// and asks for a download link (.url and .job.uuid compile); tsc must accept it and must reject a
// wrong property on the result and a body field of the wrong type. Then the generated clients run against the
// service: the path keys with their query string are the wire URLs.
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { createClient as heyApi } from '@hey-api/openapi-ts'
import createClient from 'openapi-fetch'
import { ROOT } from '../setup/test-db.ts'
import { clientTypes } from '../helpers/openapi.ts'
import { buildTestApp, createUser } from '../helpers/app.ts'

const run = promisify(execFile)
const DOC = path.join(ROOT, 'openapi/openapi.json')
// inside the checkout (test-output/ is ignored by git), so that the generated code resolves
// openapi-fetch from node_modules and tsx runs it (it leaves node_modules alone)
const scratch = path.join(ROOT, 'test-output')
fs.mkdirSync(scratch, { recursive: true })
const dir = fs.mkdtempSync(path.join(scratch, 'openapi-generators-'))
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))

const openapiTsDir = path.join(dir, 'openapi-typescript')
const heyDir = path.join(dir, 'hey-api')
fs.mkdirSync(openapiTsDir)
fs.writeFileSync(path.join(openapiTsDir, 'schema.d.ts'), await clientTypes(JSON.parse(fs.readFileSync(DOC, 'utf8'))))
await heyApi({ input: DOC, output: heyDir, logs: { level: 'silent' } })

// the calls, as a user of each client writes them
fs.writeFileSync(path.join(openapiTsDir, 'calls.ts'), `
import createClient from 'openapi-fetch'
import type { paths } from './schema.d.ts'
const client = createClient<paths>({ baseUrl: 'http://127.0.0.1:1' })
export async function cloneDrive (uuid: string): Promise<{ uuid: string | undefined, status: string | undefined }> {
  const { data } = await client.POST('/api/2.0/drives/{uuid}/action/?do=clone', { params: { path: { uuid } }, body: { name: 'the clone', size: 1024 } })
  if (!data) throw new Error('no clone')
  const drive = data.objects[0]
  const status: 'cloning_dst' | 'unmounted' | 'creating' | 'mounted' | 'resizing' | 'cloning_src' | 'uploading' | 'unavailable' | undefined = drive.status
  return { uuid: drive.uuid, status }
}
export async function downloadLink (uuid: string): Promise<{ url: string, job: string }> {
  const { data } = await client.POST('/api/2.0/drives/{uuid}/action/?do=download', { params: { path: { uuid } } })
  if (!data) throw new Error('no link')
  return { url: data.url, job: data.job.uuid }
}
`)
fs.writeFileSync(path.join(openapiTsDir, 'wrong.ts'), `
import createClient from 'openapi-fetch'
import type { paths } from './schema.d.ts'
const client = createClient<paths>({ baseUrl: 'http://127.0.0.1:1' })
export async function wrong (uuid: string): Promise<unknown> {
  const { data } = await client.POST('/api/2.0/drives/{uuid}/action/?do=clone', { params: { path: { uuid } }, body: { size: 'big' } })
  return data?.objects[0].no_such_field
}
`)
fs.writeFileSync(path.join(heyDir, 'calls.ts'), `
import { postDrivesByUuidActionClone, postDrivesByUuidActionDownload } from './sdk.gen.ts'
export async function cloneDrive (uuid: string): Promise<{ uuid: string | undefined, status: string | undefined }> {
  const { data } = await postDrivesByUuidActionClone({ path: { uuid }, body: { name: 'the clone', size: 1024 } })
  if (!data) throw new Error('no clone')
  const drive = data.objects[0]
  const status: 'cloning_dst' | 'unmounted' | 'creating' | 'mounted' | 'resizing' | 'cloning_src' | 'uploading' | 'unavailable' | undefined = drive.status
  return { uuid: drive.uuid, status }
}
export async function downloadLink (uuid: string): Promise<{ url: string, job: string }> {
  const { data } = await postDrivesByUuidActionDownload({ path: { uuid } })
  if (!data) throw new Error('no link')
  return { url: data.url, job: data.job.uuid }
}
`)
fs.writeFileSync(path.join(heyDir, 'wrong.ts'), `
import { postDrivesByUuidActionClone } from './sdk.gen.ts'
export async function wrong (uuid: string): Promise<unknown> {
  const { data } = await postDrivesByUuidActionClone({ path: { uuid }, body: { size: 'big' } })
  return data?.objects[0].no_such_field
}
`)
fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
  compilerOptions: {
    strict: true,
    noEmit: true,
    target: 'es2022',
    module: 'esnext',
    moduleResolution: 'bundler',
    allowImportingTsExtensions: true,
    lib: ['es2022', 'dom', 'dom.iterable'],
    types: [],
    skipLibCheck: false
  },
  include: ['openapi-typescript/*.ts', 'hey-api/**/*.ts']
}))

async function tsc (): Promise<string> {
  try {
    await run(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(dir, 'tsconfig.json'), '--pretty', 'false'], { cwd: dir })
    return ''
  } catch (err) {
    return String((err as { stdout?: string }).stdout ?? err)
  }
}

const output = await tsc()
const errors = output.split('\n').filter(line => /error TS\d+/.test(line))

for (const generator of ['openapi-typescript', 'hey-api']) {
  t.test(`${generator}: a typed drive clone and download link`, async t => {
    const mine = errors.filter(line => line.startsWith(`${generator}/`))
    t.same(mine.filter(line => !line.startsWith(`${generator}/wrong.ts`)), [], 'the generated client and calls.ts type-check')
    const wrong = mine.filter(line => line.startsWith(`${generator}/wrong.ts`))
    t.ok(wrong.some(line => /TS2339: Property 'no_such_field' does not exist on type/.test(line)), 'a property a Drive does not have is an error')
    t.ok(wrong.some(line => /TS2322: Type 'string' is not assignable to type 'number'/.test(line)), 'a body field of the wrong type is an error')
    t.equal(wrong.length, 2, wrong.join('\n'))
  })
}

// the part of the generated SDK this test calls (its real types are checked by tsc above)
interface HeySdk {
  postDrivesByUuidActionClone: (o: { path: { uuid: string }, body: { name: string } }) => Promise<{ response: Response, data?: { objects: Array<{ name?: string, jobs?: Array<{ uuid: string }> }> } }>
  postDrivesByUuidActionDownload: (o: { path: { uuid: string } }) => Promise<{ response: Response, data?: { url: string, job: { uuid: string } } }>
}

t.test('the generated calls send the wire URLs', async t => {
  const { app } = await buildTestApp(t)
  const user = await createUser(app)
  const address = await app.listen({ host: '127.0.0.1', port: 0 })
  const headers = { authorization: user.authorization }
  const drive = (await app.inject({ method: 'POST', url: '/api/2.0/drives/', headers, payload: { name: 'gen', size: 1024 * 1024, media: 'disk' } })).json().objects[0]
  await app.inject({ method: 'GET', url: `/api/2.0/jobs/${drive.jobs[0].uuid}/?wait=30`, headers })

  // openapi-typescript + openapi-fetch, as calls.ts uses them
  const client = createClient<import('../../openapi/client/schema.d.ts').paths>({ baseUrl: address, headers })
  const cloned = await client.POST('/api/2.0/drives/{uuid}/action/?do=clone', { params: { path: { uuid: drive.uuid } }, body: { name: 'via openapi-fetch' } })
  t.equal(cloned.response.status, 202)
  t.equal(cloned.data?.objects[0].name, 'via openapi-fetch')
  t.equal(cloned.data?.objects[0].status, 'cloning_dst')

  // the hey-api SDK itself (tsx runs the generated TypeScript)
  const sdk = await import(path.join(heyDir, 'sdk.gen.ts')) as HeySdk
  const { client: heyClient } = await import(path.join(heyDir, 'client.gen.ts')) as { client: { setConfig: (c: object) => void } }
  heyClient.setConfig({ baseUrl: address, headers })
  const heyClone = await sdk.postDrivesByUuidActionClone({ path: { uuid: drive.uuid }, body: { name: 'via hey-api' } })
  t.equal(heyClone.response.status, 202)
  t.equal(heyClone.data?.objects[0].name, 'via hey-api')
  await app.inject({ method: 'GET', url: `/api/2.0/jobs/${heyClone.data?.objects[0].jobs?.[0].uuid}/?wait=30`, headers })

  const link = await sdk.postDrivesByUuidActionDownload({ path: { uuid: drive.uuid } })
  t.equal(link.response.status, 202)
  t.match(link.data, { url: /^\/api\/2\.0\/downloads\//, job: { uuid: String } }, 'a one-time link and its job')
  const bytes = await fetch(new URL(link.data?.url ?? '', address))
  t.equal(bytes.status, 200)
  t.equal((await bytes.arrayBuffer()).byteLength, 1024 * 1024, 'the link downloads the drive')
})
