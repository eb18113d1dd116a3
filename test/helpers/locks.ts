// Polls for lock waits, in pg_locks alone. pg_locks is read live on every call; pg_stat_activity
// is not: a session reads it once per transaction and keeps that snapshot until the transaction
// ends, so a poll made inside the transaction that holds the lock never sees a backend that starts
// (or starts waiting) after its first look. (The race test of chunked.test.ts timed out that way on
// a loaded machine: the pool opened new connections for two of its requests after the first poll.)
import type pg from 'pg'

/**
 * This database's oid. pg_locks shows the whole cluster, and every test database is cloned from
 * one template, so another test file's tables carry the same OIDs.
 */
const THIS_DATABASE = '(SELECT oid FROM pg_database WHERE datname = current_database())'

/** A lock request on table $1 that waits, in this database only (a waiter in another is not this test's). */
export const WAITING_ON = `
  SELECT 1 FROM pg_locks WHERE relation = $1::regclass AND NOT granted AND database = ${THIS_DATABASE}`

/**
 * How many lock requests wait, now, for the transaction of the session that runs it (its xid),
 * or for a row lock of this database (the queue behind the first waiter of a row). pg_locks alone.
 */
export const WAITING_FOR_US = `
  SELECT count(*)::int AS n FROM pg_locks l
  WHERE NOT l.granted AND (
    l.transactionid = (SELECT transactionid FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'transactionid' AND granted LIMIT 1)
    OR (l.locktype = 'tuple' AND l.database = ${THIS_DATABASE}))`

/** WAITING_FOR_US's count, asked on `c` (which holds the lock in its open transaction). */
export async function waitingForUs (c: pg.Client): Promise<number> {
  return (await c.query<{ n: number }>(WAITING_FOR_US)).rows[0].n
}
