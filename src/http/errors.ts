// The HTTP error catalogue. Every error leaves the service as the CloudSigma array
// [{error_type, error_message, error_point}] (spec §1.13), with the status codes of §1.4. The
// domain's own errors (src/domain/errors.ts) are re-exported here for the HTTP layer's convenience;
// the error handler maps them to statuses.
import { DomainError, domainErrors } from '../domain/errors.ts'

export { DomainError }

export type ErrorType = 'validation' | 'notexist' | 'permission' | 'backend' | 'database' | 'concurrency' | 'billing' | 'payment' | 'auth' | 'gone'

export class ApiError extends Error {
  readonly statusCode: number
  readonly errorType: ErrorType
  readonly errorPoint: string | null
  readonly headers: Record<string, string>

  constructor (statusCode: number, errorType: ErrorType, message: string, errorPoint: string | null = null, headers: Record<string, string> = {}) {
    super(message)
    this.name = 'ApiError'
    this.statusCode = statusCode
    this.errorType = errorType
    this.errorPoint = errorPoint
    this.headers = headers
  }

  toJSON (): CloudSigmaError {
    return { error_type: this.errorType, error_message: this.message, error_point: this.errorPoint }
  }
}

export interface CloudSigmaError {
  error_type: string
  error_message: string
  error_point: string | null
}

export const errors = {
  ...domainErrors,
  unauthorized: (message = 'Authentication credentials were not provided or are wrong') =>
    new ApiError(401, 'permission', message, null, { 'www-authenticate': 'Basic realm="clonejobs"' }),
  /** `allowed`: the methods the path does take (the Allow header, RFC 9110 §15.5.6). */
  methodNotAllowed: (method: string, allowed: string[]) =>
    new ApiError(405, 'validation', `Method ${method} is not allowed here; this path takes ${allowed.join(', ')}`, null, { allow: allowed.join(', ') }),
  notAcceptable: () => new ApiError(406, 'validation', 'Only application/json responses can be produced'),
  /** A request body that is not JSON; `why`, when it is known (not UTF-8, say), follows. */
  malformedJson: (why?: string) => new ApiError(400, 'validation', `Malformed JSON in the request body${why ? `: ${why}` : ''}`),
  /** `type`: the request's Content-Type, with its parameters (a charset refused); undefined when it has none. */
  unsupportedMediaType: (type: string | undefined) => new ApiError(415, 'validation', `Unsupported content type: ${type ?? 'none'}`),
  /** The drive storage (e.g. the Ceph cluster) does not answer now; retry later. */
  storageUnavailable: () => new ApiError(503, 'backend', 'The drive storage is unavailable; try again later', null, { 'retry-after': '5' }),
  internal: () => new ApiError(500, 'backend', 'Internal server error')
}
