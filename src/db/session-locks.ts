// Claims that hold across processes for as long as a piece of work lasts: PostgreSQL session-level
// advisory locks (key: hashtextextended(name, 0); a member `<group>#<n>` of a group, the key pair
// (hashtext(group), n), so a statement can ask whether any member is held: groupHeldSql), all on
// ONE dedicated connection per owner (an
// app), never a pool connection per claim. A process that dies drops its connection and so its
// claims. When the connection fails (an error, its end, a liveness query that does not answer),
// every claim taken on it is gone: each holder's signal is aborted, so it stops the work it can no
// longer prove is its own; the next claim opens a new connection.
import pg from 'pg'

export interface SessionLock {
  /** aborted (reason: a SessionLockLost) when the connection holding the lock failed: the lock is gone */
  readonly signal: AbortSignal
  /**
   * The lock's name and the backend holding it, for a statement to prove the lock is still held
   * at the moment it runs (HELD_SQL): the signal learns of a dead connection only at the next ping.
   */
  readonly name: string
  readonly pid: number
  /** lets the lock go; never throws (a failed unlock drops the connection, and with it the lock) */
  release: () => Promise<void>
}

/**
 * A group member's name, `<group>#<n>`, n from 0 to MEMBER_MAX (the second int4 of the lock's key:
 * a chunk's number, which upload_chunks keeps as an int). A name whose digits pass MEMBER_MAX is a
 * plain name, here and in heldSql.
 */
const MEMBER = /^(.*)#(\d{1,10})$/s
const MEMBER_SQL = '^(.*)#([0-9]{1,10})$'
const MEMBER_MAX = 2_147_483_647

/** The name of member `n` of claim group `group` (e.g. one chunk of an upload). */
export function memberName (group: string, n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > MEMBER_MAX) throw new RangeError(`a group member's number is 0 to ${MEMBER_MAX}, got ${n}`)
  return `${group}#${n}`
}

/** The lock statement's key arguments for `name`: ($1) for a plain name, ($1, $2) for a group member. */
function keyOf (name: string): { args: string, params: unknown[] } {
  const m = MEMBER.exec(name)
  return m && Number(m[2]) <= MEMBER_MAX ? { args: 'hashtext($1), $2::int', params: [m[1], Number(m[2])] } : { args: 'hashtextextended($1, 0)', params: [name] }
}

/**
 * Whether backend $1 holds the session lock named $2, now (pg_locks is not a snapshot: it shows
 * the lock table as it is). A bigint advisory key shows its high half in classid, its low half in
 * objid, with objsubid 1; a pair of int4 keys (a group member) the first in classid, the second
 * in objid, with objsubid 2.
 */
export const HELD_SQL = `SELECT ${heldSql('$1', '$2')} AS held`

/** HELD_SQL's boolean expression, for use inside another statement: `pid` and `name` are its parameters ($n). */
export function heldSql (pid: string, name: string): string {
  return `EXISTS (
    SELECT 1 FROM pg_locks l,
      (SELECT hashtextextended(${name}::text, 0) AS h, CASE WHEN (r.m)[2]::bigint <= ${MEMBER_MAX} THEN r.m END AS m
        FROM (SELECT regexp_match(${name}::text, '${MEMBER_SQL}') AS m) r) k
    WHERE l.locktype = 'advisory' AND l.pid = ${pid}::int AND l.granted
      AND CASE WHEN k.m IS NULL
        THEN l.objsubid = 1 AND l.classid = ((k.h >> 32) & 4294967295)::oid AND l.objid = (k.h & 4294967295)::oid
        ELSE l.objsubid = 2 AND l.classid = hashtext(k.m[1])::oid AND l.objid = k.m[2]::int::oid END
  )`
}

/**
 * Whether any backend holds a member of claim group `group` (a parameter, $n), now. Two groups
 * whose hashtext collides (1 in 2^32) answer for each other: a caller may only be told "held"
 * wrongly (and refuse, retryable), never "free" wrongly.
 */
export function groupHeldSql (group: string): string {
  return `EXISTS (
    SELECT 1 FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = hashtext(${group}::text)::oid
  )`
}

export class SessionLockLost extends Error {
  constructor (name: string, cause: unknown) {
    super(`the claim ${name} was lost with its database connection`, { cause })
    this.name = 'SessionLockLost'
  }
}

export interface SessionLocksOptions {
  /** a liveness query on the connection this often while it holds claims (ms) */
  pingIntervalMs?: number
  /** the connection failed while holding `lost` claims (they were aborted) */
  onLost?: (err: unknown, lost: number) => void
}

interface Held { ctrl: AbortController, client: pg.Client | undefined }

export class SessionLocks {
  private client: pg.Client | undefined
  private connecting: Promise<pg.Client> | undefined
  /** claims of this owner by name: taken, or being taken (client undefined until its query is sent) */
  private readonly held = new Map<string, Held>()
  private pinger: NodeJS.Timeout | undefined
  private closed = false
  /** the last statement sent on each connection: the next one is sent once it has answered */
  private readonly sent = new WeakMap<pg.Client, Promise<unknown>>()

  /** `config`: the connection's settings (set query_timeout: the liveness query relies on it). */
  constructor (private readonly config: pg.ClientConfig, private readonly opts: SessionLocksOptions = {}) {}

  /** Number of claims held (or being taken) by this owner. */
  get size (): number { return this.held.size }

  /**
   * Takes claim `name`, or undefined when someone holds it: another process, another owner in
   * this process, or this owner itself (a session's advisory locks are re-entrant; these are not).
   * Throws when the database cannot be asked.
   */
  async tryLock (name: string): Promise<SessionLock | undefined> {
    if (this.closed) throw new Error('the session locks are closed')
    if (this.held.has(name)) return undefined
    const entry: Held = { ctrl: new AbortController(), client: undefined }
    this.held.set(name, entry)
    let client: pg.Client | undefined
    let ok: boolean
    try {
      client = await this.connection()
      entry.client = client
      const key = keyOf(name)
      const r = await this.send<{ ok: boolean }>(client, `SELECT pg_try_advisory_lock(${key.args}) AS ok`, key.params)
      ok = r.rows[0].ok
    } catch (err) {
      if (this.held.get(name) === entry) this.held.delete(name)
      if (client) this.lose(client, err)
      throw err
    }
    if (entry.ctrl.signal.aborted) throw new SessionLockLost(name, entry.ctrl.signal.reason)
    if (!ok) {
      this.held.delete(name)
      return undefined
    }
    const taken = client
    return {
      signal: entry.ctrl.signal,
      name,
      pid: (taken as unknown as { processID: number }).processID,
      release: async () => {
        if (this.held.get(name) !== entry) return // lost (or released) already
        this.held.delete(name)
        try {
          const key = keyOf(name)
          await this.send(taken, `SELECT pg_advisory_unlock(${key.args})`, key.params)
        } catch (err) {
          this.lose(taken, err)
        }
      }
    }
  }

  /** Drops the connection and every claim on it (their holders are aborted). */
  async close (): Promise<void> {
    this.closed = true
    await this.connecting?.catch(() => {})
    const client = this.client
    if (client === undefined) return
    this.lose(client, new Error('the session locks were closed'), false)
  }

  private async connection (): Promise<pg.Client> {
    if (this.client) return this.client
    this.connecting ??= (async () => {
      const client = new pg.Client({ keepAlive: true, ...this.config })
      client.on('error', (err) => this.lose(client, err))
      client.on('end', () => this.lose(client, new Error('the connection ended')))
      try {
        await client.connect()
      } catch (err) {
        destroy(client)
        throw err
      }
      if (this.closed) {
        destroy(client)
        throw new Error('the session locks are closed')
      }
      this.client = client
      const ping = () => {
        if (this.client !== client || ![...this.held.values()].some(h => h.client === client)) return
        this.send(client, 'SELECT 1').catch((err: unknown) => this.lose(client, err))
      }
      this.pinger = setInterval(ping, this.opts.pingIntervalMs ?? 5000)
      this.pinger.unref()
      return client
    })().finally(() => { this.connecting = undefined })
    return this.connecting
  }

  /**
   * Sends a statement on `client` after the ones sent before it have answered, in the order they
   * were asked for: every claim of this owner shares the one connection, and pg (from version 9)
   * refuses a query sent while another is still running on its client.
   */
  private async send<R extends pg.QueryResultRow = pg.QueryResultRow> (client: pg.Client, text: string, params?: unknown[]): Promise<pg.QueryResult<R>> {
    const run = async () => client.query<R>(text, params)
    const result = (this.sent.get(client) ?? Promise.resolve()).then(run, run)
    this.sent.set(client, result.catch(() => {}))
    return result
  }

  /** `client` failed (or is closed): it goes, and so does every claim taken on it. */
  private lose (client: pg.Client, err: unknown, report = true): void {
    if (this.client === client) {
      this.client = undefined
      clearInterval(this.pinger)
    }
    let lost = 0
    for (const [name, h] of this.held) {
      if (h.client !== client) continue
      this.held.delete(name)
      h.ctrl.abort(new SessionLockLost(name, err))
      lost++
    }
    destroy(client)
    if (report && lost > 0) this.opts.onLost?.(err, lost)
  }
}

function destroy (client: pg.Client): void {
  // end() would wait for the server's answer, which a half-open connection never sends
  client.connection?.stream?.destroy()
}
