// Overload answers 503 `concurrency` with Retry-After before any work is done: when too many
// requests already wait for a database connection, when the event loop lags, and
// (@fastify/under-pressure) when the heap is too full.
import underPressure from '@fastify/under-pressure'
import fp from 'fastify-plugin'
import { overloaded, RETRY_AFTER_SECONDS } from '../http/database-errors.ts'
import { sendError } from '../http/error-handler.ts'

const SAMPLE_MS = 500

export default fp(async (app) => {
  const { dbPoolMaxWaiting, maxEventLoopDelayMs, maxHeapUsedBytes } = app.config
  app.addHook('onRequest', async () => {
    if (app.dbPool.waitingCount >= dbPoolMaxWaiting) throw overloaded('Too many requests are waiting for the database; retry shortly')
  })
  // under-pressure samples the event-loop delay for us (app.memoryUsage()); its own delay check is
  // not used because the start-up itself blocks the loop for seconds (schema compilation), and a
  // sample taken across that block would refuse the first requests after listen
  await app.register(underPressure, {
    sampleInterval: SAMPLE_MS,
    maxHeapUsedBytes,
    retryAfter: RETRY_AFTER_SECONDS,
    pressureHandler: (_request, reply, type) => {
      void sendError(reply.header('retry-after', String(RETRY_AFTER_SECONDS)), overloaded(`The service is overloaded (${type}); retry shortly`))
    }
  })
  if (maxEventLoopDelayMs > 0) {
    let armedAt = Infinity
    // two samples after ready, the delay figure describes serving, not starting
    app.addHook('onReady', async () => { armedAt = Date.now() + 2 * SAMPLE_MS })
    app.addHook('onRequest', async () => {
      if (Date.now() >= armedAt && app.memoryUsage().eventLoopDelay > maxEventLoopDelayMs) {
        throw overloaded('The service is overloaded (eventLoopDelay); retry shortly')
      }
    })
  }
}, { name: 'load-shedding', dependencies: ['prisma'] })
