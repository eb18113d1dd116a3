// Request logs never carry credentials: upload/download link tokens (path segments) and the
// Authorization header are replaced before a line is written.
import type { FastifyRequest } from 'fastify'

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
