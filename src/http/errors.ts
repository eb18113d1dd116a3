// The one error catalogue. Every error leaves the service as the CloudSigma array
// [{error_type, error_message, error_point}] (spec §1.13), with the status codes of §1.4.

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
  validation: (message: string, point: string | null = null) => new ApiError(400, 'validation', message, point),
  /** An operation the object's current status does not allow (decisions.md: 400 at `status`). */
  wrongState: (message: string) => new ApiError(400, 'validation', message, 'status'),
  unauthorized: (message = 'Authentication credentials were not provided or are wrong') =>
    new ApiError(401, 'permission', message, null, { 'www-authenticate': 'Basic realm="clonejobs"' }),
  permission: (message: string, point: string | null = null) => new ApiError(403, 'permission', message, point),
  notFound: (what = 'Object', point: string | null = null) => new ApiError(404, 'notexist', `${what} does not exist`, point),
  methodNotAllowed: (method: string) => new ApiError(405, 'validation', `Method ${method} is not allowed here`),
  notAcceptable: () => new ApiError(406, 'validation', 'Only application/json responses can be produced'),
  gone: (message: string) => new ApiError(410, 'notexist', message),
  tooLarge: (message: string, point: string | null = null) => new ApiError(413, 'validation', message, point),
  unsupportedMediaType: (type: string) => new ApiError(415, 'validation', `Unsupported content type: ${type}`),
  rangeNotSatisfiable: (message: string, point: string | null = null) => new ApiError(416, 'validation', message, point),
  /** Another operation holds the resource; the client should retry (decisions.md: 503). */
  busy: (message: string, point: string | null = null) => new ApiError(503, 'concurrency', message, point),
  /** The drive storage (e.g. the Ceph cluster) does not answer now; retry later. */
  storageUnavailable: () => new ApiError(503, 'backend', 'The drive storage is unavailable; try again later', null, { 'retry-after': '5' }),
  internal: () => new ApiError(500, 'backend', 'Internal server error')
}
