// The dashboard plugin without a browser: built assets served at /dashboard/ with their cache and
// security headers, /dashboard redirected, and a CloudSigma 503 (not a crash) when nothing is built.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import Fastify from 'fastify'
import t from 'tap'
import { gunzipSync } from 'node:zlib'
import dashboard from '../../src/features/dashboard/index.ts'
import compression from '../../src/plugins/compression.ts'

function server (root: string, opts: { compress?: boolean } = {}) {
  // the service's router ignores trailing slashes: so must this one, for the redirect to matter
  const app = Fastify({ routerOptions: { ignoreTrailingSlash: true } })
  // as the service registers it: before the dashboard (app.ts)
  if (opts.compress === true) void app.register(compression)
  void app.register(dashboard, { root })
  return app
}

t.test('built assets', async t => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'dashboard-dist-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  mkdirSync(path.join(root, 'assets'))
  writeFileSync(path.join(root, 'index.html'), '<!doctype html><title>dash</title>')
  writeFileSync(path.join(root, 'assets', 'index-abc123.js'), 'console.log(1)')
  const app = server(root)
  t.teardown(() => app.close())

  const redirect = await app.inject('/dashboard')
  t.equal(redirect.statusCode, 301)
  t.equal(redirect.headers.location, '/dashboard/')
  t.equal((await app.inject('/dashboard?x=1')).headers.location, '/dashboard/?x=1', 'the query string is kept')

  const index = await app.inject('/dashboard/')
  t.equal(index.statusCode, 200)
  t.match(index.headers['content-type'], /text\/html/)
  t.equal(index.body, '<!doctype html><title>dash</title>')
  t.equal(index.headers['cache-control'], 'no-cache', 'index.html is revalidated so a new build shows')
  t.match(index.headers['content-security-policy'], /default-src 'self'/)
  t.match(index.headers['content-security-policy'], /frame-ancestors 'none'/)

  const asset = await app.inject('/dashboard/assets/index-abc123.js')
  t.equal(asset.statusCode, 200)
  t.match(asset.headers['content-type'], /javascript/)
  t.match(asset.headers['cache-control'], /immutable/, 'hashed assets are cached for good')

  t.equal((await app.inject('/dashboard/assets/missing.js')).statusCode, 404)
  t.equal((await app.inject('/dashboard/../package.json')).statusCode, 404, 'no escape from the assets folder')
  t.equal((await app.inject('/dashboard/%2e%2e/%2e%2e/package.json')).statusCode, 404, 'no escape with encoded dots')
})

t.test('assets not built: a CloudSigma 503 that says how to build them', async t => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'dashboard-empty-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const app = server(root)
  t.teardown(() => app.close())
  for (const url of ['/dashboard/', '/dashboard/assets/index.js']) {
    const res = await app.inject(url)
    t.equal(res.statusCode, 503, url)
    t.same(res.json(), [{ error_type: 'backend', error_message: 'The dashboard is not built: run `npm run build:dashboard`', error_point: null }])
  }
  t.equal((await app.inject('/dashboard')).statusCode, 301)
})

t.test('with the service\'s compression: pages and assets gzip for a browser that asks, ranges plain', async t => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'dashboard-gzip-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  mkdirSync(path.join(root, 'assets'))
  const html = '<!doctype html><title>dash</title>' + '<p>dashboard</p>'.repeat(200)
  const js = 'console.log("clonejobs");\n'.repeat(400)
  writeFileSync(path.join(root, 'index.html'), html)
  writeFileSync(path.join(root, 'assets', 'index-abc123.js'), js)
  writeFileSync(path.join(root, 'assets', 'tiny.css'), 'body{margin:0}')
  const app = server(root, { compress: true })
  t.teardown(() => app.close())
  const gzip = { 'accept-encoding': 'gzip, deflate, br, zstd' }
  for (const [url, body] of [['/dashboard/', html], ['/dashboard/assets/index-abc123.js', js]]) {
    const res = await app.inject({ url, headers: gzip })
    t.equal(res.statusCode, 200, url)
    t.equal(res.headers['content-encoding'], 'gzip', url)
    t.equal(gunzipSync(res.rawPayload).toString('utf8'), body, `${url} decodes to the file`)
    t.match(res.headers['content-security-policy'], /default-src 'self'/, `${url} keeps its headers`)
    const plain = await app.inject(url)
    t.notOk(plain.headers['content-encoding'], `${url} without Accept-Encoding`)
    t.equal(plain.body, body)
  }
  // a file is streamed, its size unknown to the threshold: small ones are gzipped too, and decode as well
  const tiny = await app.inject({ url: '/dashboard/assets/tiny.css', headers: gzip })
  t.equal(tiny.headers['content-encoding'], 'gzip')
  t.equal(gunzipSync(tiny.rawPayload).toString('utf8'), 'body{margin:0}')
  const range = await app.inject({ url: '/dashboard/assets/index-abc123.js', headers: { ...gzip, range: 'bytes=0-9' } })
  t.equal(range.statusCode, 206)
  t.notOk(range.headers['content-encoding'], 'a range is bytes of the file')
  t.equal(range.body, js.slice(0, 10))
})
