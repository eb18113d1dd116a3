// The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core)
// against the real service on real PostgreSQL: sign-in, a server clone followed live to success,
// a clone cancelled from the table, a resumable.js upload (and a resumed one) and its one-time
// download, among 10,000 jobs.
// Code run in the page is given as strings: this file is typechecked without the DOM library.
// Run with `npm run test:browser` (builds the dashboard first); not part of `npm test`.
import { createHash, randomUUID } from 'node:crypto'
import { existsSync, mkdirSync } from 'node:fs'
import path from 'node:path'
import t from 'tap'
import type { JobContext } from '../src/engine/types.ts'
import { DASHBOARD_DIST } from '../src/features/dashboard/index.ts'
import { buildTestApp, client, createUser, eventually } from '../test/helpers/app.ts'
import { waitForJob } from '../test/helpers/jobs.ts'
import { launchPage } from './chromium.ts'

const OUT = path.resolve(import.meta.dirname, '../test-output')
const MiB = 1024 ** 2
if (!existsSync(path.join(DASHBOARD_DIST, 'index.html'))) throw new Error('the dashboard is not built: run `npm run build:dashboard`')
mkdirSync(OUT, { recursive: true })

const { app } = await buildTestApp(t)
const alice = await createUser(app)
const api = client(app, alice)
const base = await app.listen({ host: '127.0.0.1', port: 0 })

async function readyDrive (name: string, size = 16 * MiB): Promise<string> {
  const res = await api.post('/api/2.0/drives/', { name, size, media: 'disk' })
  const uuid = res.json().objects[0].uuid
  await eventually(async () => (await api.get(`/api/2.0/drives/${uuid}/`)).json().status === 'unmounted')
  return uuid
}

// fixtures made through the API: a server with two disks, and a drive whose clones wait for a cancel
const disk1 = await readyDrive('web-root')
const disk2 = await readyDrive('web-data')
const server = (await api.post('/api/2.0/servers/', {
  name: 'web',
  cpu: 1000,
  mem: 512 * MiB,
  vnc_password: 'secret12',
  drives: [{ device: 'virtio', dev_channel: '0:0', drive: disk1, boot_order: 1 }, { device: 'virtio', dev_channel: '0:1', drive: disk2 }]
})).json().objects[0]
const slow = await readyDrive('slow-source')

// drive clones are held at the start of their run: server-clone children until `release`, clones of
// `slow` until they are cancelled, so the page sees them running before they finish
let release!: () => void
const released = new Promise<void>(resolve => { release = resolve })
const handler = app.jobs.handler('drive_clone')!
const run = handler.run
handler.run = async (ctx: JobContext) => {
  const aborted = new Promise<void>(resolve => ctx.signal.addEventListener('abort', () => resolve(), { once: true }))
  if (JSON.stringify(ctx.job.params).includes(slow)) {
    // the held clone reports byte progress through the engine, as a long copy does, until cancelled
    let done = 0
    const tick = setInterval(() => { done = Math.min(done + 2 * MiB, 60 * MiB); ctx.progress({ bytesDone: done, bytesTotal: 64 * MiB }) }, 300)
    await aborted
    clearInterval(tick)
  } else if (ctx.job.parentId) await Promise.race([released, aborted])
  return run(ctx)
}
t.teardown(() => { handler.run = run; release() })

// 10,000 finished jobs of this account from yesterday: the page must stay usable on top of them
const yesterday = new Date(Date.now() - 86_400_000)
for (let i = 0; i < 10_000; i += 2_000) {
  await app.prisma.job.createMany({
    data: Array.from({ length: 2_000 }, (_, k) => {
      const id = randomUUID()
      const at = new Date(yesterday.getTime() - (i + k) * 1000)
      return { id, rootId: id, ownerId: alice.id, operation: 'drive_create', state: 'success', progress: 100, created: at, lastModified: at, finishedAt: at }
    })
  })
}

const { page, pageErrors } = await launchPage(t, { width: 1280, height: 860 })
// console errors other than the API's own refusals (401 on a wrong password, 400 on a bad size),
// e.g. a Content-Security-Policy violation
// and resumable.js's test GETs, answered 404 for a chunk the service does not hold yet
const chunkTest = (url: string) => /\/api\/2\.0\/drives\/[^/]+\/upload\/\?resumableChunkNumber=/.test(url)
page.on('console', msg => {
  if (msg.type() !== 'error') return
  if (/Failed to load resource: the server responded with a status of 40[01]/.test(msg.text())) return
  if (/Failed to load resource: the server responded with a status of 404/.test(msg.text()) && chunkTest(msg.location().url)) return
  pageErrors.push(msg.text())
})
page.on('dialog', dialog => { void dialog.accept() })
// every request for the jobs list, to show that updates arrive over the stream, not by polling
const listRequests: string[] = []
page.on('request', req => { if (new URL(req.url()).pathname === '/api/2.0/jobs/') listRequests.push(req.url()) })
// resumable.js's requests to /drives/{uuid}/upload/ (its parameters are in the query string)
const chunkRequests: Array<{ method: string, drive: string, chunk: number }> = []
page.on('request', req => {
  const url = new URL(req.url())
  const m = /^\/api\/2\.0\/drives\/([^/]+)\/upload\/$/.exec(url.pathname)
  if (m) chunkRequests.push({ method: req.method(), drive: m[1], chunk: Number(url.searchParams.get('resumableChunkNumber')) })
})

// Files to upload are made in the page (setInputFiles ships the bytes over the DevTools protocol,
// which takes minutes for 10 MiB on a loaded machine): xorshift32 bytes from a seed, the same here
const XORSHIFT = 'for (let i = 0; i < size; i++) { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; bytes[i] = x & 255 }'
function pseudoRandom (size: number, seed: number): Buffer {
  const bytes = Buffer.alloc(size)
  let x = seed >>> 0
  for (let i = 0; i < size; i++) { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; bytes[i] = x & 255 }
  return bytes
}
/** Puts a file of pseudoRandom(size, seed) into the file input `selector` and fires its change. */
async function pickFile (selector: string, name: string, size: number, seed: number): Promise<Buffer> {
  // the view may still be rendering after a navigation click
  await page.locator(selector).waitFor({ state: 'attached', timeout: 30_000 })
  await page.evaluate(`(() => {
    const size = ${size}
    let x = ${seed >>> 0}
    const bytes = new Uint8Array(size)
    ${XORSHIFT}
    const input = document.querySelector(${JSON.stringify(selector)})
    const picked = new DataTransfer()
    picked.items.add(new File([bytes], ${JSON.stringify(name)}, { type: 'application/octet-stream' }))
    input.files = picked.files
    input.dispatchEvent(new Event('change', { bubbles: true }))
  })()`)
  return pseudoRandom(size, seed)
}

const shot = (name: string, fullPage = false) => page.screenshot({ path: path.join(OUT, name), fullPage })

t.test('sign in: a wrong password shows the API error, the right one opens the dashboard', async t => {
  const res = await page.goto(base + '/dashboard')
  t.equal(new URL(page.url()).pathname, '/dashboard/', '/dashboard redirects to /dashboard/')
  t.equal(res?.status(), 200)
  await page.fill('input[name=email]', alice.email)
  await page.fill('input[name=password]', 'not the password')
  await page.click('button[type=submit]')
  await page.locator('.errors').waitFor()
  t.match(await page.locator('.errors').innerText(), /permission: Authentication credentials were not provided or are wrong/)
  await page.fill('input[name=password]', alice.password)
  await page.click('button[type=submit]')
  await page.locator('[data-stream=live]').waitFor()
  t.match(await page.locator('header .who').innerText(), alice.email)
  t.same(await page.evaluate('[localStorage.length, sessionStorage.length, document.cookie]'), [0, 0, ''], 'nothing is stored in the browser')
  await page.locator('table.jobs tbody tr.job').first().waitFor()
  t.match(await page.locator('.count').innerText(), /10,000\+ jobs/)
  t.equal(await page.locator('table.jobs tbody tr.job').count(), 50, 'one page of 50 jobs')
  await page.click('text=Older ›')
  await page.locator('text=page 2').waitFor()
  t.equal(await page.locator('table.jobs tbody tr.job').count(), 50, 'the second keyset page')
  await page.click('text=‹ Newer')
  await page.locator('text=page 1').waitFor()
})

t.test('a filtered count beyond the newest 100,000 jobs reads as an estimate', async t => {
  // 95,000 more finished jobs of alice from two days ago, one in 50 failed: she now has more
  // top-level jobs than the window a filtered count looks at, and failed ones outside it
  await app.prisma.$executeRawUnsafe(`
    INSERT INTO jobs (id, owner_id, root_id, operation, state, progress, created, last_modified, finished_at)
    SELECT x.id, $1::uuid, x.id, 'drive_create', CASE WHEN i % 50 = 0 THEN 'error' ELSE 'success' END, 100, x.at, x.at, x.at
    FROM (SELECT gen_random_uuid() AS id, i, now() - interval '2 days' - make_interval(secs => i) AS at FROM generate_series(1, 95000) AS i) x`, alice.id)
  await page.getByLabel('State').selectOption('error')
  const count = page.locator('.count', { hasText: 'about' })
  await count.waitFor()
  t.match(await count.innerText(), /^about [\d,]+ jobs$/, 'an estimated total says so')
  await page.getByLabel('State').selectOption('')
  await page.locator('.count', { hasText: '10,000+ jobs' }).waitFor()
  t.notMatch(await page.locator('.count').innerText(), /about/, 'the unfiltered count is not an estimate')
})

t.test('clone a server: the parent and both drive clones reach success live', async t => {
  await page.click('header nav >> text=Servers')
  const row = page.locator(`tr[data-server="${server.uuid}"]`)
  await row.locator('button:text("Clone")').click()
  await page.fill('tr.edit input[name=name]', 'web-copy')
  await page.click('tr.edit button[type=submit]')
  await page.locator('tr[data-name="web-copy"]').waitFor()

  await page.click('header nav >> text=Jobs')
  const parent = page.locator('tr.job[data-operation=server_clone]')
  await parent.waitFor()
  await parent.locator('td.toggle button').click()
  const children = page.locator('tr.job.depth-1[data-operation=drive_clone]')
  await eventually(async () => await children.count() === 2)
  t.not(await parent.getAttribute('data-state'), 'success', 'the clone is still running when the page shows it')
  const requestsBefore = listRequests.length
  await page.evaluate('window.marker = 42')
  await shot('jobs-running-desktop.png')

  release()
  await page.locator('tr.job[data-operation=server_clone][data-state=success]').waitFor({ timeout: 30_000 })
  await page.locator('tr.job.depth-1[data-operation=drive_clone][data-state=success]').nth(1).waitFor({ timeout: 30_000 })
  t.equal(await page.locator('tr.job.depth-1[data-operation=drive_clone][data-state=success]').count(), 2, 'both children succeeded')
  t.match(await parent.locator('.figures').innerText(), /100%/)
  // the open parent's detail row (the first: the children's rows follow it) shows its log's last lines
  t.match(await page.locator('tr.detail').first().locator('pre.log').innerText(), /started after \d+ ms in the queue[^]*\nsucceeded in [\d.]+ s/, 'the open job shows its log excerpt, a line each')
  t.equal(await page.evaluate('window.marker'), 42, 'the page was not reloaded')
  t.equal(listRequests.length, requestsBefore, 'no list request: the updates came over the event stream')
  await shot('jobs-desktop.png')
})

t.test('cancel a running clone from the jobs table', async t => {
  await page.click('header nav >> text=Drives')
  await page.locator(`tr[data-drive="${slow}"] button:text("Clone")`).click()
  await page.click('tr.edit button[type=submit]')
  await page.click('header nav >> text=Jobs')
  const job = page.locator(`tr.job[data-operation=drive_clone]:has(a[title="/api/2.0/drives/${slow}/"])`)
  await page.locator(`tr.job[data-operation=drive_clone][data-state=started]:has(a[title="/api/2.0/drives/${slow}/"])`).waitFor({ timeout: 30_000 })
  // bytes, a rate measured from the live frames, and an ETA
  await eventually(async () => /MiB \/ 64\.0 MiB · [\d.]+ (KiB|MiB)\/s · ETA \d+s/.test(await job.locator('.figures').innerText()), { timeoutMs: 20_000 })
  t.match(await job.locator('.figures').innerText(), /^\d+% · [\d.]+ MiB \/ 64\.0 MiB · [\d.]+ (KiB|MiB)\/s · ETA \d+s$/)
  t.ok(Number(await job.locator('progress').getAttribute('value')) > 0, 'the bar moved')
  // the server clone opened in the test above is still open after the switch to Drives and back
  const serverClone = page.locator('tr.job[data-operation=server_clone] td.toggle button')
  await serverClone.waitFor()
  t.equal(await serverClone.getAttribute('aria-expanded'), 'true', 'an expanded job stays expanded across tab switches')
  await page.locator('tr.job.depth-1[data-operation=drive_clone]').first().waitFor()
  await shot('dashboard.png')
  await job.locator('button:text("Cancel")').click()
  await page.locator(`tr.job[data-operation=drive_clone][data-state=cancelled]:has(a[title="/api/2.0/drives/${slow}/"])`).waitFor({ timeout: 30_000 })
  t.equal(await job.locator('button:text("Cancel")').count(), 0, 'a finished job offers no cancel')
  await job.locator('td.toggle button').click()
  t.match(await page.locator('tr.detail .error-text').first().innerText(), /cancelled: The job was cancelled/)
})

t.test('upload a file with resumable.js, with progress; the drive becomes unmounted and downloads once through its link', async t => {
  await page.click('header nav >> text=Drives')
  const bytes = await pickFile('form[aria-label="Upload drive"] input[type=file]', 'small.img', 11 * MiB + 123, 1)
  await page.click('form[aria-label="Upload drive"] button[type=submit]')
  const row = page.locator('tr[data-name="small.img"]')
  await page.locator('form[aria-label="Upload drive"] .upload-progress progress').waitFor({ timeout: 30_000 })
  await page.locator('tr[data-name="small.img"][data-status=unmounted]').waitFor({ timeout: 30_000 })
  t.match(await row.innerText(), /11\.0 MiB/)
  // allocated bytes: the uploaded image takes its 11 MiB; an empty 16 MiB drive (sparse) almost nothing
  await eventually(async () => (await row.locator('td.allocated').innerText()).trim() === '11.0 MiB')
  t.match((await page.locator(`tr[data-drive="${disk2}"] td.allocated`).innerText()).trim(), /^(0 B|[\d.]+ KiB)$/, 'a sparse drive shows (almost) nothing allocated')
  const drive = await row.getAttribute('data-drive')
  t.ok(drive)
  const job = await app.prisma.job.findFirstOrThrow({ where: { ownerId: alice.id, operation: 'drive_upload' } })
  t.equal((job.result as { sha256: string }).sha256, createHash('sha256').update(bytes).digest('hex'), 'the service received the file intact')
  t.equal(Number(job.bytesDone), bytes.length, 'the job\'s progress reached the file size')
  const mine = chunkRequests.filter(r => r.drive === drive)
  t.same(mine.map(r => `${r.method} ${r.chunk}`).sort(), ['POST 1', 'POST 2'], 'resumable.js sent two chunks (5 MiB and the rest) to /drives/{uuid}/upload/')
  t.equal(await app.prisma.job.count({ where: { operation: 'drive_upload', links: { some: { resourceId: drive! } } } }), 1, 'one drive_upload job')

  await row.locator('button:text("Download")').click()
  const href = await page.locator('a.download-link').getAttribute('href')
  t.match(href, /^\/api\/2\.0\/downloads\/[^/]+\/$/)
  const first = await fetch(base + href)
  t.equal(first.status, 200)
  t.equal(createHash('sha256').update(Buffer.from(await first.arrayBuffer())).digest('hex'), createHash('sha256').update(bytes).digest('hex'), 'the one-time link serves the image')
  t.equal((await fetch(base + href)).status, 410, 'the link works once')
  await shot('drives-desktop.png', true)
})

t.test('resume an upload: only the chunks the service lacks are sent, and the drive becomes unmounted', async t => {
  const bytes = pseudoRandom(10 * MiB + 5, 2)
  const d = (await api.post('/api/2.0/initupload/', { name: 'resumed.img', size: bytes.length, media: 'disk' })).json().objects[0]
  // an earlier session stored chunk 2 (of 5 MiB and 5 MiB + 5) before it stopped
  const form = new FormData()
  for (const [k, v] of [['resumableChunkNumber', 2], ['resumableChunkSize', 5 * MiB], ['resumableCurrentChunkSize', 5 * MiB + 5], ['resumableTotalSize', bytes.length]]) form.append(String(k), String(v))
  form.append('file', new Blob([bytes.subarray(5 * MiB)]), 'resumed.img')
  const stored = await fetch(`${base}/api/2.0/drives/${d.uuid}/upload/`, { method: 'POST', body: form, headers: { authorization: alice.authorization } })
  t.equal(stored.status, 200, await stored.text())
  await page.click('header nav >> text=Drives')
  await page.locator(`tr[data-drive="${d.uuid}"][data-status=uploading]`).waitFor()
  await pickFile(`tr[data-drive="${d.uuid}"] label.resume input[type=file]`, 'resumed.img', bytes.length, 2)
  await page.locator(`tr[data-drive="${d.uuid}"][data-status=unmounted]`).waitFor({ timeout: 30_000 })
  const mine = chunkRequests.filter(r => r.drive === d.uuid).map(r => `${r.method} ${r.chunk}`).sort()
  t.same(mine, ['GET 1', 'GET 2', 'POST 1'], 'resumable.js asked for both chunks and sent only chunk 1')
  const job = await waitForJob(app, d.jobs[0].uuid)
  t.equal(job.state, 'success')
  t.equal((job.result as { sha256: string }).sha256, createHash('sha256').update(bytes).digest('hex'))
})

t.test('errors from the API are shown', async t => {
  await page.fill('form[aria-label="Create drive"] input[name=name]', 'too-big')
  await page.fill('form[aria-label="Create drive"] input[name=size]', '100000')
  await page.click('form[aria-label="Create drive"] button[type=submit]')
  await page.locator('.errors').waitFor()
  t.match(await page.locator('.errors').innerText(), /validation/)
  await page.locator('.errors button').click()
})

t.test('drive and server actions: create, resize, delete, start, stop', async t => {
  await page.click('header nav >> text=Drives')
  await page.fill('form[aria-label="Create drive"] input[name=name]', 'made-here')
  await page.fill('form[aria-label="Create drive"] input[name=size]', '0.0625')
  await page.click('form[aria-label="Create drive"] button[type=submit]')
  const made = page.locator('tr[data-name="made-here"]')
  await page.locator('tr[data-name="made-here"][data-status=unmounted]').waitFor({ timeout: 30_000 })
  t.match(await made.innerText(), /64\.0 MiB/)

  await made.locator('button:text("Resize")').click()
  await page.fill('tr.edit input[name=value]', '0.125')
  await page.click('tr.edit button[type=submit]')
  await eventually(async () => /128 MiB/.test(await made.innerText()) && await made.getAttribute('data-status') === 'unmounted', { timeoutMs: 30_000 })
  const uuid = await made.getAttribute('data-drive')
  t.equal((await api.get(`/api/2.0/drives/${uuid}/`)).json().size, 128 * MiB, 'resized in the service')

  await made.locator('button:text("Delete")').click()
  await made.waitFor({ state: 'detached', timeout: 30_000 })
  t.equal((await api.get(`/api/2.0/drives/${uuid}/`)).statusCode, 404, 'deleted in the service')

  await page.click('header nav >> text=Servers')
  const web = page.locator(`tr[data-server="${server.uuid}"]`)
  await web.locator('button:text("Start")').click()
  await page.locator(`tr[data-server="${server.uuid}"][data-status=running]`).waitFor({ timeout: 30_000 })
  t.equal(await web.locator('button:text("Delete")').count(), 0, 'a running server offers no delete')
  await web.locator('button:text("Stop")').click()
  await page.locator(`tr[data-server="${server.uuid}"][data-status=stopped]`).waitFor({ timeout: 30_000 })
  t.equal((await api.get(`/api/2.0/servers/${server.uuid}/`)).json().status, 'stopped')
})

t.test('narrow screen: rows become cards and actions stay reachable', async t => {
  await page.setViewportSize({ width: 390, height: 844 })
  await page.click('header nav >> text=Jobs')
  // still expanded, several tab switches later
  await page.locator('tr.job[data-operation=server_clone] td.toggle button[aria-expanded=true]').waitFor()
  await page.locator('tr.job.depth-1[data-operation=drive_clone]').first().waitFor()
  await shot('jobs-narrow.png')
  t.equal(await page.evaluate('document.documentElement.scrollWidth <= window.innerWidth + 1'), true, 'no horizontal scrolling')
  await page.click('header nav >> text=Drives')
  await shot('drives-narrow.png', true)
  t.equal(await page.evaluate('document.documentElement.scrollWidth <= window.innerWidth + 1'), true, 'no horizontal scrolling')
  t.ok(await page.locator(`tr[data-drive="${disk1}"] button:text("Clone")`).isVisible(), 'row actions are visible')
  await page.click('header nav >> text=Servers')
  await page.locator(`tr[data-server="${server.uuid}"]`).waitFor()
  await shot('servers-narrow.png', true)
  t.equal(await page.evaluate('document.documentElement.scrollWidth <= window.innerWidth + 1'), true, 'no horizontal scrolling')
  t.ok(await page.locator(`tr[data-server="${server.uuid}"] button:text("Start")`).isVisible(), 'power actions are visible')
  await page.setViewportSize({ width: 1280, height: 860 })
})

t.test('no script or security-policy errors in the page', async t => {
  t.same(pageErrors, [])
})
