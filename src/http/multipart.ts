// Errors of the multipart parser (busboy, @fastify/multipart) are the client's malformed body:
// a 400, never a 500.
import { ApiError, DomainError, errors } from './errors.ts'

const PARSER_MESSAGES = /^(Multipart: Boundary not found|Boundary required|Unexpected end of multipart data|.* terminated early due to unexpected end of multipart data|The needle cannot (have a length bigger than 256|be an empty String\/Buffer)\.|Missing Content-Type-header\.|Unsupported Content-Type\.)$/
const PARSER_CODES = new Set(['FST_PROTO_VIOLATION', 'FST_INVALID_JSON_FIELD_ERROR', 'FST_MP_PREMATURE_CLOSE'])

/** The error to answer for `err` thrown while reading a multipart body: parser errors become 400. */
export function multipartFailure (err: unknown): unknown {
  if (err instanceof ApiError || err instanceof DomainError || !(err instanceof Error)) return err
  const code = (err as { code?: unknown }).code
  if ((typeof code === 'string' && PARSER_CODES.has(code)) || PARSER_MESSAGES.test(err.message)) {
    return errors.validation(`The multipart body is malformed: ${err.message.replace(/\.$/, '')}`)
  }
  return err
}
