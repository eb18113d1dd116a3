// Request logs never carry credentials: upload/download link tokens (path segments) and the
// Authorization header are replaced before a line is written.
import { LogController, type FastifyReply, type FastifyRequest } from 'fastify'

const LINK_SEGMENT = /^(?:uploads|downloads)$/i
const PERCENT = /%([0-9a-f]{2})/gi
// a link quoted in the query string (not routed, but still a token)
const QUERY_TOKEN = /(\/(?:uploads|downloads)\/)[^/?#&]+/gi
const MAY_HOLD_LINK = /%|loads/i

/** A path segment as the router reads it: every valid %XX decoded (bytes as Latin-1; only the ASCII words matter here), invalid ones left. */
function decodeSegment (segment: string): string {
  let decoded = segment
  // twice: a doubly encoded word (%2575) is still caught, though the router decodes only once
  for (let i = 0; i < 2 && decoded.includes('%'); i++) decoded = decoded.replace(PERCENT, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16)))
  return decoded
}

/**
 * The URL with every path segment after an `uploads` or `downloads` segment replaced by
 * `[redacted]`. The words are recognised however the client spelt them (percent-encoded letters,
 * any case, encoded slashes, empty segments from doubled slashes), so a spelling the router accepts
 * cannot carry a token into the log. The query is kept, but for a link quoted in it.
 */
export function redactUrl (url: string): string {
  // neither word, nor an escape that could spell one: nothing to redact (most requests)
  if (!MAY_HOLD_LINK.test(url)) return url
  const q = url.search(/[?#]/)
  const path = q === -1 ? url : url.slice(0, q)
  const rest = q === -1 ? '' : url.slice(q)
  let after = false
  const out = path.split('/').map(segment => {
    if (segment === '') return segment
    if (after) return '[redacted]'
    const parts = decodeSegment(segment).split(/[/\\]/)
    const word = parts.findIndex(part => LINK_SEGMENT.test(part.trim()))
    if (word === -1) return segment
    after = true
    // an encoded slash: the word and whatever follows it share this raw segment
    return parts.slice(word + 1).some(part => part !== '') ? '[redacted]' : segment
  })
  return out.join('/') + rest.replace(QUERY_TOKEN, '$1[redacted]')
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
