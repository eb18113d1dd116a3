// Failures of the database connection (pool exhausted, server unreachable, stalled or restarting)
// and transactions that lost to a simultaneous one are temporary, not a bug: 503 with Retry-After,
// never a 500.
import { describeError, transientDatabaseError } from '../db/transient.ts'
import { ApiError, DomainError, errors } from './errors.ts'

export const RETRY_AFTER_SECONDS = 1

export function overloaded (message = 'The service is busy; retry shortly'): ApiError {
  return new ApiError(503, 'concurrency', message, null, { 'retry-after': String(RETRY_AFTER_SECONDS) })
}

/** A transaction that lost to a simultaneous one (deadlock, serialization failure), rolled back. */
export function conflicted (): ApiError {
  return new ApiError(503, 'concurrency', 'A simultaneous operation conflicted with this one; retry shortly', null, { 'retry-after': String(RETRY_AFTER_SECONDS) })
}

export function databaseDown (): ApiError {
  return new ApiError(503, 'database', 'The database is unavailable; retry shortly', null, { 'retry-after': String(RETRY_AFTER_SECONDS) })
}

/** The 503 for a database-connection failure; undefined for any other error. */
export function databaseFailure (err: unknown): ApiError | undefined {
  if (err instanceof ApiError || err instanceof DomainError) return undefined
  const kind = transientDatabaseError(err)
  if (kind === 'pool') return overloaded()
  if (kind === 'conflict') return conflicted()
  if (kind === 'down') return databaseDown()
  return undefined
}

const FOREIGN_KEY = /ForeignKeyConstraintViolation|violates foreign key constraint|"23503"|Foreign key constraint/i

/**
 * A write that referenced a row removed meanwhile (a race, not a bug): 401 when it was the
 * requesting account itself (removed while its request was in flight), 404 for any other row;
 * undefined for any other error.
 */
export function referenceGone (err: unknown): ApiError | undefined {
  if (err instanceof ApiError || err instanceof DomainError) return undefined
  const { codes, text } = describeError(err)
  if (!codes.some(c => c === 'P2003' || c === '23503') && !FOREIGN_KEY.test(text)) return undefined
  if (/owner_id/.test(text)) return errors.unauthorized('The account no longer exists')
  return new ApiError(404, 'notexist', 'An object this request refers to no longer exists')
}
