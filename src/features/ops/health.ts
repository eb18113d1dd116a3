// Liveness and readiness probes.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'

const Health = Type.Object({
  status: Type.String(),
  database: Type.Optional(Type.Union([Type.Literal('up'), Type.Literal('down')], { description: 'Whether the database answered a probe within the last second' }))
})

const health: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/healthz', {
    schema: { tags: ['health'], summary: 'The process is up (200 even when the database is down, which the body says)', response: { 200: Health } }
  }, async () => ({ status: 'ok', database: await app.dbHealth.recent() ? 'up' as const : 'down' as const }))

  app.get('/readyz', {
    schema: { tags: ['health'], summary: 'The database is reachable (503 within a second when it is not)', response: { 200: Health, 503: Health } }
  }, async (request, reply) => {
    if (await app.dbHealth.probe(900)) return { status: 'ok', database: 'up' as const }
    request.log.warn('readiness check failed')
    return reply.code(503).send({ status: 'database unreachable', database: 'down' })
  })
}

export default health
