// Failures of the database that pass (pool exhausted, server unreachable, stalled or restarting,
// a transaction that lost to a simultaneous one: deadlock or serialization failure), told apart
// from every other error: the HTTP layer answers them 503 with Retry-After, the job engine runs
// the job again later instead of failing it.
// Prisma: P1001 unreachable, P1002 timed out, P1008 operation timeout, P1017 connection closed,
// P2024 pool timeout, P2028 transaction could not start / expired
const PRISMA_CODES = new Set(['P1001', 'P1002', 'P1008', 'P1017', 'P2024', 'P2028'])
const POOL_CODES = new Set(['P2024', 'P2028'])
// PostgreSQL: 40001 serialization failure, 40P01 deadlock detected; Prisma P2034 (write conflict
// or deadlock) and its pg adapter's TransactionWriteConflict. Rare at READ COMMITTED (every
// session's level, src/db/session.ts), but a deadlock can happen there too; the transaction was
// rolled back, and running it again is the cure, not a bug report.
const CONFLICT_CODES = new Set(['40001', '40P01', 'P2034'])
const CONFLICT_MESSAGES = /could not serialize access|deadlock detected|write conflict or a deadlock|TransactionWriteConflict/i
// PostgreSQL: connection exceptions, too many connections, shutting down / starting up
const PG_STATES = /^(08|53300|57P0[1-3])/
// network failures of the driver's own connection; they count only on a socket error (below)
const NET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENOTCONN'])
const MESSAGES = /timeout exceeded when trying to connect|Connection terminated|Query read timeout|Client has encountered a connection error|Unable to start a transaction in the given time|Transaction already closed|Can't reach database server|server closed the connection|terminating connection|the database system is (starting up|shutting down)|DatabaseNotReachable|ConnectionClosed|SocketTimeout|TooManyConnections/i
const POOL_MESSAGES = /timeout exceeded when trying to connect|Unable to start a transaction in the given time|TooManyConnections/i

export function describeError (err: unknown, depth = 0): { codes: string[], text: string } {
  if (depth > 4 || err === null || typeof err !== 'object') return { codes: [], text: typeof err === 'string' ? err : '' }
  const e = err as { code?: unknown, errorCode?: unknown, originalCode?: unknown, message?: unknown, cause?: unknown, meta?: unknown, name?: unknown }
  // originalCode: the SQLSTATE under a driver adapter's error (its cause)
  const codes = [e.code, e.errorCode, e.originalCode].filter((c): c is string => typeof c === 'string')
  let text = `${typeof e.name === 'string' ? e.name : ''} ${typeof e.message === 'string' ? e.message : ''}`
  for (const inner of [e.cause, e.meta]) {
    const d = describeError(inner, depth + 1)
    codes.push(...d.codes)
    text += ' ' + d.text
  }
  if (e.meta && typeof e.meta === 'object') text += ' ' + JSON.stringify(e.meta)
  return { codes, text }
}

/**
 * The network code of a failed socket system call (a `syscall` and a numeric `errno`, as Node
 * raises for the driver's connection: connect, read, write), in the error or its causes. The same
 * codes appear on errors that are not the database's: a client hanging up mid-body makes the
 * request stream fail with "aborted" and code ECONNRESET (no syscall, no errno), which is the
 * client's fault, not an outage. The rule is the one @prisma/adapter-pg uses to tell socket errors.
 */
function socketCode (err: unknown, depth = 0): boolean {
  if (depth > 4 || err === null || typeof err !== 'object') return false
  const e = err as { code?: unknown, syscall?: unknown, errno?: unknown, cause?: unknown }
  if (typeof e.code === 'string' && NET_CODES.has(e.code) && typeof e.syscall === 'string' && typeof e.errno === 'number') return true
  return socketCode(e.cause, depth + 1)
}

/**
 * 'pool' when no connection could be had in time, 'down' when the database is unreachable,
 * 'conflict' when a transaction lost to a simultaneous one (deadlock, serialization failure);
 * else undefined.
 */
export function transientDatabaseError (err: unknown): 'pool' | 'down' | 'conflict' | undefined {
  const name = (err as { name?: unknown } | null)?.name
  const { codes, text } = describeError(err)
  if (codes.some(c => CONFLICT_CODES.has(c)) || CONFLICT_MESSAGES.test(text)) return 'conflict'
  if (codes.some(c => POOL_CODES.has(c)) || POOL_MESSAGES.test(text)) return 'pool'
  if (name === 'PrismaClientInitializationError' || codes.some(c => PRISMA_CODES.has(c) || PG_STATES.test(c)) || socketCode(err) || MESSAGES.test(text)) return 'down'
  return undefined
}
