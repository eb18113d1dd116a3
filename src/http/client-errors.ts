// Errors Fastify and Node raise before any route runs (bad percent-encoding, over-long path
// parameters, malformed or oversized request heads), answered as CloudSigma arrays too.
import http from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyError, FastifyReply, FastifyRequest, FastifyServerOptions } from 'fastify'
import { ApiError } from './errors.ts'
import { toApiError } from './error-handler.ts'

function frameworkError (error: FastifyError): ApiError {
  switch (error.code) {
    case 'FST_ERR_BAD_URL':
      return new ApiError(400, 'validation', 'The URL is not validly percent-encoded')
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return new ApiError(414, 'validation', 'A path segment is too long')
  }
  return toApiError(error)
}

/** Fastify's `frameworkErrors` option: errors raised while routing a request. */
export const frameworkErrors: NonNullable<FastifyServerOptions['frameworkErrors']> = (error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
  const apiError = frameworkError(error)
  request.log.info({ error: apiError.toJSON(), status: apiError.statusCode }, 'request rejected')
  void reply.code(apiError.statusCode).headers(apiError.headers).type('application/json; charset=utf-8').send(JSON.stringify([apiError.toJSON()]))
}

function clientError (err: NodeJS.ErrnoException): ApiError {
  switch (err.code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new ApiError(408, 'validation', 'The request was not received in time')
    case 'HPE_HEADER_OVERFLOW':
      return new ApiError(431, 'validation', 'The request line and headers are too large')
    case 'HPE_INVALID_CONTENT_LENGTH':
    case 'HPE_UNEXPECTED_CONTENT_LENGTH':
      return new ApiError(400, 'validation', 'The Content-Length header is malformed', 'Content-Length')
    case 'HPE_INVALID_TRANSFER_ENCODING':
      return new ApiError(400, 'validation', 'The Transfer-Encoding header is malformed', 'Transfer-Encoding')
  }
  return new ApiError(400, 'validation', 'The request is not valid HTTP/1.1')
}

/**
 * The server's `checkExpectation` listener: an Expect header other than 100-continue, which Node
 * answers with an empty 417 when nobody listens; the request is not run.
 */
export function expectationFailed (request: http.IncomingMessage, response: http.ServerResponse): void {
  const apiError = new ApiError(417, 'validation', `Expect: ${JSON.stringify(String(request.headers.expect).slice(0, 100))} is not supported; only 100-continue is`, 'Expect')
  const body = JSON.stringify([apiError.toJSON()])
  // the body the client may still send is not read: the connection ends with the answer
  response.writeHead(417, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' })
  response.end(body)
}

/** Fastify's `clientErrorHandler` option: Node's HTTP parser refused the request; the socket is closed after the answer. */
export function clientErrorHandler (err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  // a response already under way cannot be replaced by another one
  const started = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true
  if (socket.writable && !started) {
    const apiError = clientError(err)
    const body = JSON.stringify([apiError.toJSON()])
    socket.write(`HTTP/1.1 ${apiError.statusCode} ${http.STATUS_CODES[apiError.statusCode]}\r\n` +
      `Content-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
  }
  socket.destroy(err)
}
