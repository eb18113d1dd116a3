// Request logs never carry credentials: upload/download link tokens (path segments) and the
// Authorization header are replaced before a line is written.
import { LogController, type FastifyReply, type FastifyRequest } from 'fastify'

const TOKEN_SEGMENT = /(\/(?:uploads|downloads)\/)[^/?#]+/gi

export function redactUrl (url: string): string {
  return url.replace(TOKEN_SEGMENT, '$1[redacted]')
}

/** pino serializer for `req`: Fastify's default fields, the URL with tokens redacted. */
export function redactedRequest (req: FastifyRequest): Record<string, unknown> {
  return {
    method: req.method,
    url: redactUrl(req.url),
    host: req.host,
    remoteAddress: req.ip,
    remotePort: req.socket?.remotePort
  }
}

export const REDACT_PATHS = ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'authorization']

/**
 * The request log: one line per request, written when it is answered, with the request (redacted
 * as above), the status and the time taken, where Fastify writes "incoming request" and "request
 * completed" apart. Log lines were a visible share of a read's CPU (issue 18).
 */
export class OneLineRequestLog extends LogController {
  override incomingRequest (): void {}

  override requestCompleted (error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (error) reply.log.error({ req: request, res: reply, err: error, responseTime: reply.elapsedTime }, 'request errored')
    else reply.log.info({ req: request, res: reply, responseTime: reply.elapsedTime }, 'request completed')
  }
}
