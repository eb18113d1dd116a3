// The dashboard plugin without a browser: built assets served at /dashboard/ with their cache and
// security headers, /dashboard redirected, and a CloudSigma 503 (not a crash) when nothing is built.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import Fastify from 'fastify'
import t from 'tap'
import dashboard from '../../src/features/dashboard/index.ts'

function server (root: string) {
  // the service's router ignores trailing slashes: so must this one, for the redirect to matter
  const app = Fastify({ routerOptions: { ignoreTrailingSlash: true } })
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
