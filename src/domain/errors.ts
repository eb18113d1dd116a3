// Domain errors: what went wrong, as a stable code and the field it is about, thrown by services,
// the engine and the rules below http. src/http/error-handler.ts alone turns them into statuses
// and CloudSigma arrays.

export const DOMAIN_ERROR_CODES = ['validation', 'wrong_state', 'notexist', 'permission', 'gone', 'too_large', 'range', 'busy'] as const
export type DomainErrorCode = typeof DOMAIN_ERROR_CODES[number]

export class DomainError extends Error {
  readonly code: DomainErrorCode
  /** The field or parameter the error is about (CloudSigma's error_point). */
  readonly point: string | null

  constructor (code: DomainErrorCode, message: string, point: string | null = null) {
    super(message)
    this.name = 'DomainError'
    this.code = code
    this.point = point
  }
}

/**
 * A bulk item's error names its object (`Drive <id>: ...`, `Server <id>: ...`), unless its message
 * already does: in a list of many, "size must be at most ..." alone does not say which one.
 */
export function namedFor (label: string, id: string, err: unknown): unknown {
  if (!(err instanceof DomainError) || err.message.toLowerCase().includes(id.toLowerCase())) return err
  return new DomainError(err.code, `${label} ${id}: ${err.message}`, err.point)
}

/** Runs `fn` (sync or async) for bulk item `id`; its DomainError is named for the item (namedFor). */
export function naming<T> (label: string, id: string, fn: () => T): T {
  try {
    const out = fn()
    return (out instanceof Promise ? out.catch((err: unknown) => { throw namedFor(label, id, err) }) : out) as T
  } catch (err) {
    throw namedFor(label, id, err)
  }
}

export const domainErrors = {
  validation: (message: string, point: string | null = null) => new DomainError('validation', message, point),
  /** An operation the object's current status does not allow (reported at `status`). */
  wrongState: (message: string) => new DomainError('wrong_state', message, 'status'),
  permission: (message: string, point: string | null = null) => new DomainError('permission', message, point),
  notFound: (what = 'Object', point: string | null = null) => new DomainError('notexist', `${what} does not exist`, point),
  gone: (message: string) => new DomainError('gone', message),
  tooLarge: (message: string, point: string | null = null) => new DomainError('too_large', message, point),
  rangeNotSatisfiable: (message: string, point: string | null = null) => new DomainError('range', message, point),
  /** Another operation holds the resource; the client should retry. */
  busy: (message: string, point: string | null = null) => new DomainError('busy', message, point)
}

/** The one busy error for a resource held by an unfinished job. */
export function busyWith (resource: { type: string, id: string }, job: { id: string, operation: string }, point?: string): DomainError {
  const drive = resource.type === 'drives'
  return domainErrors.busy(`${drive ? 'Drive' : 'Server'} ${resource.id} is busy with the ${job.operation} job ${job.id}`, point ?? (drive ? 'drive' : 'server'))
}
