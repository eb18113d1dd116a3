// The real resumable.js (the `resumablejs` npm package, unmodified, loaded from node_modules) in a
// headless Chromium (Debian's /usr/bin/chromium through playwright-core), uploading into drives
// made by /initupload/ with its default options (1 MiB chunks, three at a time, a test GET before
// each chunk): a whole upload, a resumed one that sends only the missing chunks, and the refusals
// it must stop on. The page is served at the service's own origin through Playwright's routing.
// Code run in the page is given as strings: this file is typechecked without the DOM library.
// Run with `npm run test:browser`; not part of `npm test`.
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import t from 'tap'
import { buildTestApp, client, createUser, type TestUser } from '../test/helpers/app.ts'
import { waitForJob } from '../test/helpers/jobs.ts'
import { launchPage } from './chromium.ts'

const MiB = 1024 ** 2
const LIBRARY = readFileSync(createRequire(import.meta.url).resolve('resumablejs'), 'utf8')

const { app } = await buildTestApp(t)
const alice = await createUser(app)
const bob = await createUser(app)
const api = client(app, alice)
const base = await app.listen({ host: '127.0.0.1', port: 0 })

const { page, pageErrors } = await launchPage(t)

// the harness page and the library, at the service's origin (so the XHRs are same-origin)
await page.route(`${base}/resumable-harness/**`, async route => {
  const { pathname } = new URL(route.request().url())
  if (pathname.endsWith('/resumable.js')) await route.fulfill({ contentType: 'text/javascript', body: LIBRARY })
  else await route.fulfill({ contentType: 'text/html', body: '<!doctype html><meta charset="utf-8"><title>resumable.js</title><script src="resumable.js"></script>' })
})
await page.goto(`${base}/resumable-harness/`)
t.equal(await page.evaluate('typeof Resumable === "function" && new Resumable({}).support'), true, 'resumable.js loaded and supported')

// every request resumable.js makes to /drives/{uuid}/upload/
const requests: Array<{ method: string, drive: string, chunk: number, status?: number }> = []
page.on('response', res => {
  const url = new URL(res.url())
  const m = /^\/api\/2\.0\/drives\/([^/]+)\/upload\/$/.exec(url.pathname)
  if (m) requests.push({ method: res.request().method(), drive: m[1], chunk: Number(url.searchParams.get('resumableChunkNumber')), status: res.status() })
})
const of = (drive: string) => requests.filter(r => r.drive === drive)

interface Outcome { ok: boolean, message: string, progress: number[] }

/** Uploads `bytes` into drive `uuid` with resumable.js's defaults, as `user`. */
async function upload (uuid: string, bytes: Buffer, user: TestUser = alice): Promise<Outcome> {
  return await page.evaluate(`new Promise(resolve => {
    const binary = atob(${JSON.stringify(bytes.toString('base64'))})
    const data = new Uint8Array(binary.length)
    for (let i = 0; i < binary.length; i++) data[i] = binary.charCodeAt(i)
    const file = new File([data], 'image.raw')
    const r = new Resumable({ target: '/api/2.0/drives/${uuid}/upload/', headers: { authorization: ${JSON.stringify(user.authorization)} } })
    const progress = []
    r.on('fileProgress', f => progress.push(f.progress()))
    r.on('fileSuccess', (f, message) => resolve({ ok: true, message, progress }))
    r.on('fileError', (f, message) => { r.cancel(); resolve({ ok: false, message, progress }) })
    r.on('filesAdded', () => r.upload())
    r.addFile(file)
  })`) as Outcome
}

async function init (size: number): Promise<{ uuid: string, jobs: Array<{ uuid: string }> }> {
  return (await api.post('/api/2.0/initupload/', { name: 'resumablejs', size, media: 'disk' })).json().objects[0]
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')

t.test('a whole upload: a test GET (404) and a POST per chunk; the drive becomes unmounted with the file', async t => {
  const bytes = randomBytes(5 * MiB + 1234)
  const d = await init(bytes.length)
  const outcome = await upload(d.uuid, bytes)
  t.ok(outcome.ok, outcome.message)
  t.equal(outcome.progress.at(-1), 1, 'resumable.js saw the file complete')
  const sent = of(d.uuid)
  t.same(sent.filter(r => r.method === 'GET').map(r => `${r.chunk} ${r.status}`).sort(), ['1 404', '2 404', '3 404', '4 404', '5 404'],
    'five chunks (the last of 1 MiB + 1234 bytes), each tested first and absent')
  t.same(sent.filter(r => r.method === 'POST').map(r => `${r.chunk} ${r.status}`).sort(), ['1 200', '2 200', '3 200', '4 200', '5 200'])
  const job = await waitForJob(app, d.jobs[0].uuid)
  t.equal(job.state, 'success')
  t.same(job.result, { sha256: sha(bytes), bytes: bytes.length })
  t.equal(Number(job.bytesDone), bytes.length)
  t.equal((await api.get(`/api/2.0/drives/${d.uuid}/`)).json().status, 'unmounted')
  t.equal(sha((await api.get(`/api/2.0/drives/${d.uuid}/download/`)).rawPayload), sha(bytes))
})

t.test('a resumed upload sends only the chunks the service lacks', async t => {
  const bytes = randomBytes(4 * MiB + 99)
  const d = await init(bytes.length)
  // an earlier session stored chunks 2 and 4 (the last: 1 MiB + 99 bytes)
  for (const [n, start, end] of [[2, MiB, 2 * MiB], [4, 3 * MiB, bytes.length]]) {
    const form = new FormData()
    for (const [k, v] of [['resumableChunkNumber', n], ['resumableChunkSize', MiB], ['resumableTotalSize', bytes.length]]) form.append(String(k), String(v))
    form.append('file', new Blob([bytes.subarray(start, end)]), 'image.raw')
    const res = await fetch(`${base}/api/2.0/drives/${d.uuid}/upload/`, { method: 'POST', body: form, headers: { authorization: alice.authorization } })
    t.equal(res.status, 200, await res.text())
  }
  const outcome = await upload(d.uuid, bytes)
  t.ok(outcome.ok, outcome.message)
  const sent = of(d.uuid)
  t.same(sent.filter(r => r.method === 'GET').map(r => `${r.chunk} ${r.status}`).sort(), ['1 404', '2 200', '3 404', '4 200'])
  t.same(sent.filter(r => r.method === 'POST').map(r => r.chunk).sort(), [1, 3], 'only chunks 1 and 3 were sent')
  const job = await waitForJob(app, d.jobs[0].uuid)
  t.same(job.result, { sha256: sha(bytes), bytes: bytes.length })
  t.equal((await api.get(`/api/2.0/drives/${d.uuid}/`)).json().status, 'unmounted')
})

t.test('resumable.js stops on the refusals: a file of another size, another account\'s drive', async t => {
  const bytes = randomBytes(2 * MiB)
  const d = await init(bytes.length + 1)
  const wrong = await upload(d.uuid, bytes)
  t.notOk(wrong.ok)
  t.match(JSON.parse(wrong.message), [{ error_type: 'validation', error_point: 'resumableTotalSize' }])
  t.ok(of(d.uuid).filter(r => r.method === 'POST').every(r => r.status === 400), 'every POST was refused')
  t.equal(await app.prisma.uploadChunk.count({ where: { driveId: d.uuid } }), 0)

  const other = await init(bytes.length)
  const foreign = await upload(other.uuid, bytes, bob)
  t.notOk(foreign.ok)
  t.match(JSON.parse(foreign.message), [{ error_type: 'notexist' }])
  t.equal(await app.prisma.uploadChunk.count({ where: { driveId: other.uuid } }), 0, 'bob stored nothing in alice\'s drive')
  t.same(pageErrors, [])
})
