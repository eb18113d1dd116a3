// A request body that goes silent for BODY_IDLE_TIMEOUT_MS is ended: the request stream fails
// with a 408 `validation` error, so the reader's own failure path cleans up (an upload's drive is
// removed and its job ends in `error` with this reason). Other requests and streaming responses
// (SSE, long polls) are not limited. The server's head timeout is set here too.
import type { IncomingMessage } from 'node:http'
import fp from 'fastify-plugin'
import { ApiError } from '../http/errors.ts'

export function bodyIdleError (ms: number): ApiError {
  return new ApiError(408, 'validation', `The request body sent nothing for ${ms} ms and was ended`, null, { connection: 'close' })
}

function hasBody (raw: IncomingMessage): boolean {
  const length = raw.headers['content-length']
  return raw.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
}

/**
 * Watches a request's socket while its body arrives: idle for `ms` (no bytes either way) fails
 * the request with `bodyIdleError`. Uses the socket's own inactivity timer.
 */
export function watchBodyIdle (raw: IncomingMessage, ms: number): void {
  const socket = raw.socket
  if (!socket || typeof socket.setTimeout !== 'function' || raw.complete) return
  const onTimeout = () => {
    stop()
    raw.destroy(bodyIdleError(ms))
  }
  const stop = () => {
    socket.setTimeout(0)
    socket.removeListener('timeout', onTimeout)
  }
  socket.setTimeout(ms)
  socket.on('timeout', onTimeout)
  raw.once('end', stop)
  raw.once('close', stop)
}

export default fp(async (app) => {
  const { bodyIdleTimeoutMs, headersTimeoutMs } = app.config
  // Node's default requestTimeout (300 s) would cut long uploads; the idle watchdog replaces it
  if (app.server) {
    app.server.headersTimeout = headersTimeoutMs
    app.server.requestTimeout = 0
  }
  app.addHook('onRequest', async (request) => {
    if (hasBody(request.raw)) watchBodyIdle(request.raw, bodyIdleTimeoutMs)
  })
}, { name: 'timeouts' })
