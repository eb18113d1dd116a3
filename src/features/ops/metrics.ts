// GET /metrics: Prometheus text format (jobs by state and operation, claim latency, durations,
// purge counts, process metrics). Outside /api/2.0 and unauthenticated, like /healthz; expose it
// only where the scraper can reach it.
import type { FastifyPluginAsync } from 'fastify'

const metrics: FastifyPluginAsync = async (app) => {
  app.get('/metrics', {
    config: { produces: ['text/plain'] },
    schema: { tags: ['health'], summary: 'Prometheus metrics' }
  }, async (_request, reply) => {
    const registry = app.jobMetrics.registry
    const text = await registry.metrics()
    return reply.type(registry.contentType).send(text)
  })
}

export default metrics
