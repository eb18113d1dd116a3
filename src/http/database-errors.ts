// Failures of the database connection (pool exhausted, server unreachable, stalled or restarting)
// are the service's temporary state, not a bug: 503 with Retry-After, never a 500.
import { ApiError, DomainError, errors } from './errors.ts'

// Prisma: P1001 unreachable, P1002 timed out, P1008 operation timeout, P1017 connection closed,
// P2024 pool timeout, P2028 transaction could not start / expired
const PRISMA_CODES = new Set(['P1001', 'P1002', 'P1008', 'P1017', 'P2024', 'P2028'])
const POOL_CODES = new Set(['P2024', 'P2028'])
// PostgreSQL: connection exceptions, too many connections, shutting down / starting up
const PG_STATES = /^(08|53300|57P0[1-3])/
const NET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENOTCONN'])
const MESSAGES = /timeout exceeded when trying to connect|Connection terminated|Query read timeout|Client has encountered a connection error|Unable to start a transaction in the given time|Transaction already closed|Can't reach database server|server closed the connection|terminating connection|the database system is (starting up|shutting down)|DatabaseNotReachable|ConnectionClosed|SocketTimeout|TooManyConnections/i
const POOL_MESSAGES = /timeout exceeded when trying to connect|Unable to start a transaction in the given time|TooManyConnections/i

export const RETRY_AFTER_SECONDS = 1

export function overloaded (message = 'The service is busy; retry shortly'): ApiError {
  return new ApiError(503, 'concurrency', message, null, { 'retry-after': String(RETRY_AFTER_SECONDS) })
}

export function databaseDown (): ApiError {
  return new ApiError(503, 'database', 'The database is unavailable; retry shortly', null, { 'retry-after': String(RETRY_AFTER_SECONDS) })
}

function describe (err: unknown, depth = 0): { codes: string[], text: string } {
  if (depth > 4 || err === null || typeof err !== 'object') return { codes: [], text: typeof err === 'string' ? err : '' }
  const e = err as { code?: unknown, errorCode?: unknown, message?: unknown, cause?: unknown, meta?: unknown, name?: unknown }
  const codes = [e.code, e.errorCode].filter((c): c is string => typeof c === 'string')
  let text = `${typeof e.name === 'string' ? e.name : ''} ${typeof e.message === 'string' ? e.message : ''}`
  for (const inner of [e.cause, e.meta]) {
    const d = describe(inner, depth + 1)
    codes.push(...d.codes)
    text += ' ' + d.text
  }
  if (e.meta && typeof e.meta === 'object') text += ' ' + JSON.stringify(e.meta)
  return { codes, text }
}

/** The 503 for a database-connection failure; undefined for any other error. */
export function databaseFailure (err: unknown): ApiError | undefined {
  if (err instanceof ApiError || err instanceof DomainError) return undefined
  const name = (err as { name?: unknown } | null)?.name
  const { codes, text } = describe(err)
  if (codes.some(c => POOL_CODES.has(c)) || POOL_MESSAGES.test(text)) return overloaded()
  if (name === 'PrismaClientInitializationError' || codes.some(c => PRISMA_CODES.has(c) || PG_STATES.test(c) || NET_CODES.has(c)) || MESSAGES.test(text)) {
    return databaseDown()
  }
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
  const { codes, text } = describe(err)
  if (!codes.some(c => c === 'P2003' || c === '23503') && !FOREIGN_KEY.test(text)) return undefined
  if (/owner_id/.test(text)) return errors.unauthorized('The account no longer exists')
  return new ApiError(404, 'notexist', 'An object this request refers to no longer exists')
}
