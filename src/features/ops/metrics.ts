// GET /metrics: Prometheus text format (jobs by state and operation, claim latency, durations,
// purge counts, password verifications, image removals waiting, process metrics). Outside /api/2.0 and unauthenticated,
// like /healthz; expose it only where the scraper can reach it.
import type { FastifyPluginAsync } from 'fastify'
import { Registry } from 'prom-client'

const metrics: FastifyPluginAsync = async (app) => {
  app.get('/metrics', {
    config: { produces: ['text/plain'] },
    schema: { tags: ['health'], summary: 'Prometheus metrics' }
  }, async (_request, reply) => {
    // the engine's metrics, authentication's and the image removals', each on a registry of this app's own
    const registry = Registry.merge([app.jobMetrics.registry, app.authMetrics, app.imageRemovalMetrics])
    const text = await registry.metrics()
    return reply.type(registry.contentType).send(text)
  })
}

export default metrics
