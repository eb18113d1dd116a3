// Change events: `publishChange` writes an `events` row and NOTIFYs it in the caller's transaction;
// the EventHub of every process hears the NOTIFY and delivers {resource_type, resource_uri, object}
// frames to the SSE streams and websockets of the owning account. NOTIFYs sent while the LISTEN
// connection was down are lost, so after a reconnect the hub reads the missed rows from `events`
// (catch-up) and delivers each event id once, whichever way it came.
import { createHash } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import type { PrismaClient } from '../db/client.ts'
import { query, type Sql } from '../db/sql.ts'
import { CHANNELS, type PgListener } from './listener.ts'

export type ResourceType = 'drives' | 'servers' | 'jobs'

/** What happened to the object (TrueNAS's event names). */
export type ChangeKind = 'added' | 'changed' | 'removed'

export interface ChangeInput {
  ownerId: string
  resourceType: ResourceType
  resourceId: string
  /** Default 'changed'; a frame whose object is gone says 'removed' whatever was published. */
  change?: ChangeKind
}

/**
 * Announces that an object changed (or was deleted). Call it inside the transaction that makes
 * the change: the NOTIFY is delivered when, and only if, it commits.
 */
export async function publishChange (db: Sql, change: ChangeInput | ChangeInput[]): Promise<void> {
  const list = Array.isArray(change) ? change : [change]
  if (list.length === 0) return
  const values = [list.map(c => c.ownerId), list.map(c => c.resourceType), list.map(c => c.resourceId), list.map(c => c.change ?? 'changed')]
  await query(db, PUBLISH_SQL, values, 'clonejobs_publish')
}

/**
 * Events per NOTIFY. A payload on the events channel is a JSON array of events rows, each
 * {id, o: owner, t: resource type, r: resource id, c: change kind}, in id order: a statement that writes many
 * events (a batch of claims or finishes, a bulk enqueue) sends a few NOTIFYs instead of one per
 * event, and 40 rows stay well under PostgreSQL's 8000-byte payload limit.
 */
export const EVENTS_PER_NOTIFY = 40

/**
 * The SELECT that NOTIFYs the events rows of `src` (columns id, owner_id, resource_type,
 * resource_id, change) in id order, EVENTS_PER_NOTIFY per payload; it yields one row per NOTIFY.
 */
export function notifyEventsSql (src: string): string {
  // A payload is a JSON array of runs, one per (owner, type, change) among its events:
  // {"o": owner, "t": type, "c": change, "i": [event ids], "r": [resource ids]}, half the bytes of
  // one object per event (PostgreSQL copies every payload into its notification queue). Events are
  // grouped by id distance from the statement's first one: ids of one statement are consecutive
  // unless another statement took some meanwhile, so a payload holds at most EVENTS_PER_NOTIFY
  // events without a window function over all rows. Owner ids are uuids, event ids numbers, type
  // and change fixed words; only resource ids go through JSON escaping.
  return `SELECT pg_notify('${CHANNELS.events}', x.p) FROM (
      SELECT k.n, '[' || string_agg(k.run, ',' ORDER BY k.first) || ']' AS p FROM (
        SELECT g.n, min(g.id) AS first,
          '{"o":"' || g.owner_id || '","t":"' || g.resource_type || '","c":"' || g.change || '","i":[' ||
          string_agg(g.id::text, ',' ORDER BY g.id) || '],"r":' || array_to_json(array_agg(g.resource_id ORDER BY g.id))::text || '}' AS run
        FROM (SELECT s.*, (s.id - (SELECT min(id) FROM ${src})) / ${EVENTS_PER_NOTIFY} AS n FROM ${src} s) g
        GROUP BY g.n, g.owner_id, g.resource_type, g.change
      ) k
      GROUP BY k.n ORDER BY k.n
    ) x`
}

/**
 * Two WITH items that publish change events inside a larger statement, as publishChange does in
 * its own: `events` inserts the events rows of `rows`, a SELECT of (owner_id uuid, resource_type,
 * resource_id text, change) whose order the event ids follow; `notified` NOTIFYs them
 * (notifyEventsSql) and is one row, `n` the number of NOTIFYs. The statement must read `notified`
 * (a SELECT in WITH runs only when referenced), and the NOTIFYs go out when it commits.
 */
export function publishEventsSql (rows: string, names: { events?: string, notified?: string } = {}): string {
  const events = names.events ?? 'ev'
  return `${events} AS (
      INSERT INTO events (owner_id, resource_type, resource_id, resource_uri, change)
      SELECT x.owner_id, x.resource_type, x.resource_id, '/api/2.0/' || x.resource_type || '/' || x.resource_id || '/', x.change
      FROM (${rows}) x
      RETURNING id, owner_id, resource_type, resource_id, change
    ),
    ${names.notified ?? 'notified'} AS (SELECT count(*)::int AS n FROM (${notifyEventsSql(events)}) x)`
}

// publishChange's statement (after notifyEventsSql's constants, which it reads when built)
const PUBLISH_SQL = `
  WITH ${publishEventsSql(`
    SELECT x.o::uuid AS owner_id, x.t AS resource_type, x.r AS resource_id, x.c AS change
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS x(o, t, r, c, n)
    ORDER BY x.n`)}
  -- one row, not a void column per NOTIFY: Prisma's raw query cannot read void
  SELECT n AS notified FROM notified`

/**
 * The events of one NOTIFY payload on the events channel, in id order: an array of runs (see
 * notifyEventsSql); arrays of single events and a single event object are accepted too.
 */
export function parseEvents (payload: string): ChangeEvent[] {
  try {
    return eventsOf(JSON.parse(payload))
  } catch {
    return []
  }
}

interface Run { o: string, t: string, c?: string, i: Array<number | string>, r: string[] }
interface Single { id: string, o: string, t: string, r: string, c?: string }

function eventsOf (parsed: unknown): ChangeEvent[] {
  const list = (Array.isArray(parsed) ? parsed : [parsed]) as Array<Run | Single | null>
  const out: ChangeEvent[] = []
  for (const p of list) {
    if (p === null || typeof p !== 'object') continue
    if (Array.isArray(p.r)) {
      const run = p as Run
      if (!Array.isArray(run.i)) continue
      const change = kindOf(run.c)
      for (let k = 0; k < run.r.length && k < run.i.length; k++) {
        if (typeof run.r[k] === 'string') out.push({ id: String(run.i[k]), ownerId: run.o, resourceType: run.t, resourceId: run.r[k], change })
      }
    } else if (typeof p.r === 'string') {
      const one = p as Single
      out.push({ id: String(one.id), ownerId: one.o, resourceType: one.t, resourceId: one.r, change: kindOf(one.c) })
    }
  }
  // runs of different kinds interleave in id order
  if (out.length > 1) out.sort((a, b) => a.id.length - b.id.length || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  return out
}

export interface ChangeEvent {
  /** events.id, as a decimal string (it is a bigint) */
  id: string
  ownerId: string
  resourceType: string
  resourceId: string
  /** as published ('changed' for the engine's own job events) */
  change: ChangeKind
}

export interface Frame {
  /** added, changed or removed (removed whenever the object is gone at delivery) */
  change: ChangeKind
  resource_type: string
  resource_uri: string
  object?: unknown
}

/** Loads the current wire object of a resource for its owner; undefined when it is gone. */
export type ObjectLoader = (prisma: PrismaClient, ownerId: string, id: string) => Promise<unknown>

export type Subscriber = (event: ChangeEvent, frame: Frame) => void

export interface EventHubOptions {
  /**
   * How far back (before the connection was last known alive) a catch-up reads: covers events of
   * transactions that began before the loss and committed during it, when they lasted less than
   * this (default 60 s).
   */
  catchUpWindowMs?: number
}

/** A catch-up mark: `max` is the highest event id seen by local time `at`, so every later-allocated id is above it. */
interface Mark { at: number, max: bigint }

/**
 * Event ids delivered recently, as sorted runs of consecutive ids (the events of one statement
 * have consecutive ids, and most arrive in order), each with the last time one of its ids was
 * delivered: a few runs instead of a map entry per event kept for the catch-up window. Ids are
 * JavaScript numbers (exact below 2^53: centuries of events at a million a second).
 */
export class DeliveredIds {
  private readonly lo: number[] = []
  private readonly hi: number[] = []
  private readonly at: number[] = []

  /** Runs held (tests). */
  get runs (): number { return this.lo.length }

  /** The index of the last run starting at or below `id` (-1 if none). */
  private before (id: number): number {
    let a = 0
    let b = this.lo.length - 1
    let found = -1
    while (a <= b) {
      const m = (a + b) >> 1
      if (this.lo[m] <= id) { found = m; a = m + 1 } else b = m - 1
    }
    return found
  }

  has (id: number): boolean {
    const k = this.before(id)
    return k >= 0 && id <= this.hi[k]
  }

  /** Records `id` (not yet held) as delivered at `now`. */
  add (id: number, now: number): void {
    const n = this.lo.length
    // the common case: the next id of the newest run, or a new newest run
    if (n > 0 && id === this.hi[n - 1] + 1) { this.hi[n - 1] = id; this.at[n - 1] = now; return }
    if (n === 0 || id > this.hi[n - 1] + 1) { this.lo.push(id); this.hi.push(id); this.at.push(now); return }
    const k = this.before(id)
    const joinsLeft = k >= 0 && this.hi[k] + 1 === id
    const joinsRight = k + 1 < n && this.lo[k + 1] - 1 === id
    if (joinsLeft && joinsRight) {
      this.hi[k] = this.hi[k + 1]
      this.at[k] = Math.max(now, this.at[k + 1])
      this.lo.splice(k + 1, 1); this.hi.splice(k + 1, 1); this.at.splice(k + 1, 1)
    } else if (joinsLeft) {
      this.hi[k] = id; this.at[k] = now
    } else if (joinsRight) {
      this.lo[k + 1] = id; this.at[k + 1] = now
    } else {
      this.lo.splice(k + 1, 0, id); this.hi.splice(k + 1, 0, id); this.at.splice(k + 1, 0, now)
    }
  }

  /** Forgets the oldest runs wholly at or below `floor` whose ids were all delivered before `t`. */
  prune (floor: number, t: number): void {
    let drop = 0
    while (drop < this.lo.length && this.hi[drop] <= floor && this.at[drop] < t) drop++
    if (drop > 0) { this.lo.splice(0, drop); this.hi.splice(0, drop); this.at.splice(0, drop) }
  }
}

export class EventHub {
  private readonly loaders = new Map<string, ObjectLoader>()
  private readonly subscribers = new Map<string, Set<Subscriber>>()
  private readonly waiters = new Map<string, Set<() => void>>()
  private readonly logWaiters = new Map<string, Set<() => void>>()
  // per-account delivery chains keep frames in NOTIFY (commit) order while objects load
  private readonly chains = new Map<string, Promise<void>>()
  private unlisten: Array<() => void> = []
  private listener: PgListener | undefined
  private readonly windowMs: number
  // exactly-once delivery across NOTIFY and catch-up: the ids delivered recently
  private readonly delivered = new DeliveredIds()
  private maxSeen = 0
  private marks: Mark[] = []
  /** live events held while a catch-up reads the missed ones, delivered after them */
  private held: ChangeEvent[] | undefined
  private catchUps: Promise<void> = Promise.resolve()
  /** the floor of a catch-up that failed: the next one reads from there */
  private owedFloor: bigint | undefined
  /** Events delivered by catch-up reads so far (tests, logs). */
  caughtUp = 0

  constructor (private readonly prisma: PrismaClient, private readonly log: FastifyBaseLogger, opts: EventHubOptions = {}) {
    this.windowMs = opts.catchUpWindowMs ?? 60_000
  }

  /** Lets the features (drives, servers, jobs) put their full objects into frames. */
  registerLoader (type: string, loader: ObjectLoader): void {
    this.loaders.set(type, loader)
  }

  attach (listener: PgListener): void {
    this.listener = listener
    this.unlisten.push(listener.on(CHANNELS.events, (payload) => this.receive(payload)))
    this.unlisten.push(listener.onReconnected((info) => { void this.catchUp(info.aliveAt) }))
    // the first mark: events up to the newest id now were committed (or will be notified) before this
    const at = Date.now()
    this.lastId().then(max => {
      if (Number(max) > this.maxSeen) this.maxSeen = Number(max)
      this.marks.unshift({ at, max })
    }, err => this.log.warn({ err }, 'could not read the newest event id'))
  }

  detach (): void {
    for (const u of this.unlisten) u()
    this.unlisten = []
  }

  /** Receives every frame of `ownerId`'s objects until the returned function is called. */
  subscribe (ownerId: string, fn: Subscriber): () => void {
    let set = this.subscribers.get(ownerId)
    if (!set) this.subscribers.set(ownerId, set = new Set())
    set.add(fn)
    return () => {
      set.delete(fn)
      if (set.size === 0 && this.subscribers.get(ownerId) === set) this.subscribers.delete(ownerId)
    }
  }

  /** Resolves at the next change of `resourceId` (any account) or after `ms`. */
  waitForChange (resourceId: string, ms: number): Promise<void> {
    return wait(this.waiters, resourceId, ms)
  }

  /** Resolves at the next change of job `jobId` or lines added to its log, or after `ms`. */
  waitForJobOrLog (jobId: string, ms: number): Promise<void> {
    const cancels: Array<() => void> = []
    return Promise.race([
      wait(this.waiters, jobId, ms, (cancel) => cancels.push(cancel)),
      wait(this.logWaiters, jobId, ms, (cancel) => cancels.push(cancel))
    ]).then(() => { for (const c of cancels) c() })
  }

  async frameFor (event: ChangeEvent): Promise<Frame> {
    const frame: Frame = { change: event.change, resource_type: event.resourceType, resource_uri: `/api/2.0/${event.resourceType}/${event.resourceId}/` }
    const loader = this.loaders.get(event.resourceType)
    if (loader && event.change !== 'removed') {
      try {
        const object = await loader(this.prisma, event.ownerId, event.resourceId)
        if (object !== undefined && object !== null) frame.object = object
        else frame.change = 'removed'
      } catch (err) {
        this.log.warn({ err, event }, 'could not load the object of an event')
      }
    }
    // a removed frame's object names what is gone (decisions.md, 2026-12-01): {uuid, resource_uri}
    if (frame.change === 'removed') frame.object = { uuid: event.resourceId, resource_uri: frame.resource_uri }
    return frame
  }

  /** Stored events of `ownerId` after `afterId`, oldest first (for Last-Event-ID resumption). */
  async since (ownerId: string, afterId: bigint, limit = 1000, resourceId?: string): Promise<ChangeEvent[]> {
    const rows = await this.prisma.event.findMany({
      where: { ownerId, id: { gt: afterId }, ...(resourceId ? { resourceId } : {}) },
      orderBy: { id: 'asc' },
      take: limit
    })
    return rows.map(r => ({ id: r.id.toString(), ownerId: r.ownerId, resourceType: r.resourceType, resourceId: r.resourceId, change: kindOf(r.change) }))
  }

  /** The newest event id, so a fresh stream can start from "now". */
  async lastId (): Promise<bigint> {
    const row = await this.prisma.event.findFirst({ orderBy: { id: 'desc' }, select: { id: true } })
    return row?.id ?? 0n
  }

  private receive (payload: string): void {
    let parsed: unknown
    try {
      parsed = JSON.parse(payload)
    } catch {
      return
    }
    // lines added to a job's log (src/engine/log.ts): wakes its followers, no frame
    const log = (parsed as { log?: unknown } | null)?.log
    if (typeof log === 'string') {
      for (const w of [...this.logWaiters.get(log) ?? []]) w()
      return
    }
    for (const event of eventsOf(parsed)) {
      if (this.held) this.held.push(event)
      else this.deliver(event)
    }
  }

  /**
   * The highest event id seen by local time `t`: every event with a higher id was allocated after
   * `t`. Ids come from one sequence (no cache), so they grow with the time they were taken.
   */
  private floorAt (t: number): bigint {
    let floor: bigint | undefined
    for (const m of this.marks) {
      if (m.at <= t) floor = m.max
      else break
    }
    // no mark that old (a loss soon after start): the first one
    return floor ?? this.marks[0]?.max ?? 0n
  }

  /**
   * After a reconnect: delivers the events that committed while the connection was down. Those
   * were allocated after aliveAt minus the window (their transactions lasted less than it), so
   * their ids are above the highest id seen by then; ids delivered since are skipped.
   */
  catchUp (aliveAt: number): Promise<void> {
    const run = async (): Promise<void> => {
      let after = this.floorAt(aliveAt - this.windowMs)
      if (this.owedFloor !== undefined && this.owedFloor < after) after = this.owedFloor
      this.owedFloor = after
      this.held ??= []
      let count = 0
      try {
        for (;;) {
          const rows = await this.prisma.event.findMany({ where: { id: { gt: after } }, orderBy: { id: 'asc' }, take: 1000 })
          for (const r of rows) {
            if (this.deliver({ id: r.id.toString(), ownerId: r.ownerId, resourceType: r.resourceType, resourceId: r.resourceId, change: kindOf(r.change) })) count++
          }
          if (rows.length < 1000) break
          after = rows.at(-1)!.id
        }
        this.owedFloor = undefined
        this.caughtUp += count
        this.log.info({ events: count }, 'caught up on change events missed while the listener was down')
      } catch (err) {
        this.log.warn({ err }, 'catching up on missed change events failed; retrying in a second')
        // from the same floor (owedFloor), while the hub is attached
        if (this.unlisten.length > 0) setTimeout(() => { void this.catchUp(aliveAt) }, 1000).unref()
      } finally {
        const held = this.held
        this.held = undefined
        for (const e of held) this.deliver(e)
      }
    }
    this.catchUps = this.catchUps.then(run)
    return this.catchUps
  }

  /** Hands an event to waiters and subscribers unless it was delivered already; true if delivered. */
  private deliver (event: ChangeEvent): boolean {
    const id = Number(event.id)
    if (this.delivered.has(id)) return false
    const now = Date.now()
    const last = this.marks.at(-1)
    if (!last || now - last.at >= 1000) {
      // a mark per second at most: by now every id up to maxSeen had been seen
      this.marks.push({ at: now, max: BigInt(this.maxSeen) })
      this.prune()
    }
    this.delivered.add(id, now)
    if (id > this.maxSeen) this.maxSeen = id
    for (const w of [...this.waiters.get(event.resourceId) ?? []]) w()
    const subs = this.subscribers.get(event.ownerId)
    if (!subs || subs.size === 0) return true
    const prev = this.chains.get(event.ownerId) ?? Promise.resolve()
    const next = prev.then(async () => {
      const frame = await this.frameFor(event)
      for (const s of [...this.subscribers.get(event.ownerId) ?? []]) {
        try { s(event, frame) } catch (err) { this.log.warn({ err }, 'event subscriber failed') }
      }
    })
    this.chains.set(event.ownerId, next)
    void next.finally(() => { if (this.chains.get(event.ownerId) === next) this.chains.delete(event.ownerId) })
    return true
  }

  // forgets what no catch-up can read again: marks older than the window before the connection was
  // last known alive (it does not move while the connection is down), and delivered ids at or below
  // the floor such a catch-up would read from (floors only grow)
  private prune (): void {
    const aliveAt = this.listener?.aliveAt
    if (aliveAt === undefined || aliveAt === 0) return
    const t = aliveAt - this.windowMs
    while (this.marks.length > 1 && this.marks[1].at <= t) this.marks.shift()
    let floor = this.floorAt(t)
    if (this.owedFloor !== undefined && this.owedFloor < floor) floor = this.owedFloor
    // ids delivered from t on are kept in any case
    this.delivered.prune(Number(floor), t)
  }
}

function kindOf (c: unknown): ChangeKind {
  return c === 'added' || c === 'removed' ? c : 'changed'
}

function wait (map: Map<string, Set<() => void>>, key: string, ms: number, onCancel?: (cancel: () => void) => void): Promise<void> {
  return new Promise(resolve => {
    let set = map.get(key)
    if (!set) map.set(key, set = new Set())
    const done = () => {
      clearTimeout(timer)
      set.delete(done)
      if (set.size === 0 && map.get(key) === set) map.delete(key)
      resolve()
    }
    const timer = setTimeout(done, ms)
    set.add(done)
    onCancel?.(done)
  })
}

/** How many objects one stream remembers for de-duplication (the oldest are forgotten first). */
const DEDUP_ENTRIES = 5000

/**
 * One stream's filter against repeated frames. A frame carries its object as read at delivery,
 * so several changes committed before their frames are delivered (a job's last progress write and
 * its finish, an enqueue and its claim) would all show the newest state: the frames after the first
 * repeat it and are dropped, so each state a client sees arrives once. A 'removed' frame passes
 * once per object.
 */
export class FrameFilter {
  private readonly seen = new Map<string, string>()

  /** True when `frame` shows something this stream has not sent for its object yet. */
  fresh (frame: Frame): boolean {
    // a frame without an object (no loader, or it failed) has nothing to compare
    if (frame.change !== 'removed' && frame.object === undefined) return true
    const digest = frame.change === 'removed' ? 'removed' : createHash('sha1').update(JSON.stringify(frame.object)).digest('base64')
    if (this.seen.get(frame.resource_uri) === digest) return false
    this.seen.delete(frame.resource_uri)
    this.seen.set(frame.resource_uri, digest)
    if (this.seen.size > DEDUP_ENTRIES) this.seen.delete(this.seen.keys().next().value!)
    return true
  }
}
