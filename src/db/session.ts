// Every connection's session runs in UTC (and writes times in ISO) at READ COMMITTED, whatever
// the server's or database's settings.
//
// Prisma's pg adapter reads a timestamptz by relabelling its offset as +00:00 without moving the
// clock time, and writes a Date as a UTC wall-clock time with no offset, which PostgreSQL reads
// in the session's TimeZone (prisma/orm#26786, open). On a server whose TimeZone is not UTC (initdb
// takes the machine's: an embedded PostgreSQL on a laptop in Kolkata, a managed server set to
// Europe/Berlin) every time the service showed was off by the offset, and so was every age it
// read back or cut off through Prisma: an Idempotency-Key still in use taken for abandoned, the
// purge's cutoff (test/db/timezone.test.ts). Times it writes and compares in SQL, or sends
// through pg as toISOString (leases, run_at, links' expiry), were right either way.
// The service's transactions are written for READ COMMITTED (claims with SKIP LOCKED, writes that
// wait on a row lock and then read the committed row). On a database that defaults to
// SERIALIZABLE or REPEATABLE READ they failed on every concurrent write instead (SQLSTATE 40001):
// creates, clones and servers answered 500, and jobs ended in `internal error`
// (test/db/isolation.test.ts).
// The settings travel in the startup packet (`options`), so they hold from the first statement of
// every connection, pooled or not; they come after any `options` the URL carries, so they win.

/**
 * PostgreSQL settings every connection of the service starts with: UTC; times written in ISO
 * ('YYYY-MM-DD HH:MM:SS+00'), the one shape pg, Prisma's adapter and the jobs' reads parse (a
 * server set to DateStyle 'SQL, DMY' would otherwise send '03/12/2026 17:42:02 UTC');
 * transactions at READ COMMITTED, the level the service's SQL is written for; and a transaction
 * left idle for 30 s (the longest lease) ended by the server. A process frozen (SIGSTOP, a VM
 * paused) or cut off inside a transaction kept its row locks for as long as it stayed so: the
 * job it held stayed `started` past its lease, since claims skip locked rows, and its drive
 * transitional (a probe froze one in a clone's settle and in a fenced write: no takeover until it
 * was let run again). The service's own transactions never wait between statements that long.
 */
export const SESSION_SETTINGS: Readonly<Record<string, string>> = { TimeZone: 'UTC', DateStyle: 'ISO', default_transaction_isolation: 'read committed', idle_in_transaction_session_timeout: '30s' }

/** A value in `options`: a space or backslash would end or escape the argument, so each is escaped. */
const optionValue = (v: string): string => v.replace(/[\\ ]/g, '\\$&')

/**
 * `databaseUrl` with `settings` (and SESSION_SETTINGS) added to its `options` parameter as
 * `-c name=value`. A URL's own query parameters override a pg config object's, so the settings go
 * into the URL itself. A string that is not a URL is returned as it is.
 */
export function sessionUrl (databaseUrl: string, settings: Record<string, string> = {}): string {
  let url: URL
  try {
    url = new URL(databaseUrl)
  } catch {
    return databaseUrl
  }
  const own = url.searchParams.get('options')
  const added = Object.entries({ ...settings, ...SESSION_SETTINGS }).map(([k, v]) => `-c ${k}=${optionValue(v)}`).join(' ')
  url.searchParams.set('options', own ? `${own} ${added}` : added)
  return url.toString()
}
