// Overload answers 503 `concurrency` with Retry-After before any work is done: when too many
// requests already wait for a database connection, and (@fastify/under-pressure) when the event
// loop lags or the heap is too full.
import underPressure from '@fastify/under-pressure'
import fp from 'fastify-plugin'
import { overloaded, RETRY_AFTER_SECONDS } from '../http/database-errors.ts'
import { sendError } from '../http/error-handler.ts'

export default fp(async (app) => {
  const { dbPoolMaxWaiting, maxEventLoopDelayMs, maxHeapUsedBytes } = app.config
  app.addHook('onRequest', async () => {
    if (app.dbPool.waitingCount >= dbPoolMaxWaiting) throw overloaded('Too many requests are waiting for the database; retry shortly')
  })
  await app.register(underPressure, {
    maxEventLoopDelay: maxEventLoopDelayMs,
    maxHeapUsedBytes,
    retryAfter: RETRY_AFTER_SECONDS,
    pressureHandler: (_request, reply, type) => {
      void sendError(reply.header('retry-after', String(RETRY_AFTER_SECONDS)), overloaded(`The service is overloaded (${type}); retry shortly`))
    }
  })
}, { name: 'load-shedding', dependencies: ['prisma'] })
