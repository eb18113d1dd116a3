// The dashboard's built assets (dashboard/dist, made by `npm run build:dashboard`) at /dashboard/.
// Without a build the pages answer a CloudSigma 503 saying so; the API itself is unaffected.
import { existsSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import fastifyStatic from '@fastify/static'
import type { FastifyPluginAsync, FastifyReply } from 'fastify'

export const DASHBOARD_DIST = path.resolve(fileURLToPath(import.meta.url), '../../../../dashboard/dist')

export interface DashboardOptions {
  /** Folder holding the built index.html and assets/ (default: dashboard/dist). */
  root?: string
}

// answered directly (not thrown) so a missing build is not logged as a server error per request
const NOT_BUILT = [{ error_type: 'backend', error_message: 'The dashboard is not built: run `npm run build:dashboard`', error_point: null }]

const dashboard: FastifyPluginAsync<DashboardOptions> = async (app, opts) => {
  const root = opts.root ?? DASHBOARD_DIST
  // the router ignores trailing slashes, so /dashboard would reach the page with relative asset
  // URLs resolved against / : send the browser to /dashboard/ first
  app.addHook('onRequest', async (request, reply) => {
    if (request.url === '/dashboard' || request.url.startsWith('/dashboard?')) {
      return reply.redirect('/dashboard/' + request.url.slice('/dashboard'.length), 301)
    }
  })
  // a strict policy: the bundle is same-origin only, and nothing may frame the page
  app.addHook('onSend', async (request, reply) => {
    if (request.url.startsWith('/dashboard')) {
      reply.header('content-security-policy', "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'")
      reply.header('x-content-type-options', 'nosniff')
    }
  })

  if (!existsSync(path.join(root, 'index.html'))) {
    app.log.warn({ root }, 'dashboard assets are missing; /dashboard/ answers 503 until `npm run build:dashboard`')
    const answer = async (_request: unknown, reply: FastifyReply) => reply.code(503).send(NOT_BUILT)
    app.get('/dashboard/', { schema: { hide: true } }, answer)
    app.get('/dashboard/*', { schema: { hide: true } }, answer)
    return
  }
  await app.register(fastifyStatic, {
    root,
    prefix: '/dashboard/',
    index: false,
    wildcard: true,
    // hashed file names under assets/ never change; index.html must be revalidated to pick up a new build
    setHeaders: (reply, file) => {
      reply.header('cache-control', file.includes(`${path.sep}assets${path.sep}`) ? 'public, max-age=31536000, immutable' : 'no-cache')
    }
  })
  app.get('/dashboard/', { schema: { hide: true } }, (_request, reply) => reply.sendFile('index.html'))
}

export default dashboard
