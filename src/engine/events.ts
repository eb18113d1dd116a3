// Change events: `publishChange` writes an `events` row and NOTIFYs it in the caller's transaction;
// the EventHub of every process hears the NOTIFY and delivers {resource_type, resource_uri, object}
// frames to the SSE streams and websockets of the owning account.
import { createHash } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import type { PrismaClient, Tx } from '../db/client.ts'
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
export async function publishChange (db: PrismaClient | Tx, change: ChangeInput | ChangeInput[]): Promise<void> {
  const list = Array.isArray(change) ? change : [change]
  if (list.length === 0) return
  await db.$executeRawUnsafe(`
    WITH e AS (
      INSERT INTO events (owner_id, resource_type, resource_id, resource_uri, change)
      SELECT x.o::uuid, x.t, x.r, '/api/2.0/' || x.t || '/' || x.r || '/', x.c
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS x(o, t, r, c, n)
      ORDER BY x.n
      RETURNING id, owner_id, resource_type, resource_id, change
    )
    SELECT pg_notify('${CHANNELS.events}', json_build_object('id', id::text, 'o', owner_id, 't', resource_type, 'r', resource_id, 'c', change)::text)
    FROM e ORDER BY id`,
  list.map(c => c.ownerId), list.map(c => c.resourceType), list.map(c => c.resourceId), list.map(c => c.change ?? 'changed'))
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

export class EventHub {
  private readonly loaders = new Map<string, ObjectLoader>()
  private readonly subscribers = new Map<string, Set<Subscriber>>()
  private readonly waiters = new Map<string, Set<() => void>>()
  private readonly logWaiters = new Map<string, Set<() => void>>()
  // per-account delivery chains keep frames in NOTIFY (commit) order while objects load
  private readonly chains = new Map<string, Promise<void>>()
  private unlisten: (() => void) | undefined

  constructor (private readonly prisma: PrismaClient, private readonly log: FastifyBaseLogger) {}

  /** Lets the features (drives, servers, jobs) put their full objects into frames. */
  registerLoader (type: string, loader: ObjectLoader): void {
    this.loaders.set(type, loader)
  }

  attach (listener: PgListener): void {
    this.unlisten = listener.on(CHANNELS.events, (payload) => this.receive(payload))
  }

  detach (): void {
    this.unlisten?.()
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
    let event: ChangeEvent
    try {
      const p = JSON.parse(payload) as { id: string, o: string, t: string, r: string, c?: string, log?: string }
      // lines added to a job's log (src/engine/log.ts): wakes its followers, no frame
      if (typeof p.log === 'string') {
        for (const w of [...this.logWaiters.get(p.log) ?? []]) w()
        return
      }
      event = { id: String(p.id), ownerId: p.o, resourceType: p.t, resourceId: p.r, change: kindOf(p.c) }
    } catch {
      return
    }
    for (const w of [...this.waiters.get(event.resourceId) ?? []]) w()
    const subs = this.subscribers.get(event.ownerId)
    if (!subs || subs.size === 0) return
    const prev = this.chains.get(event.ownerId) ?? Promise.resolve()
    const next = prev.then(async () => {
      const frame = await this.frameFor(event)
      for (const s of [...this.subscribers.get(event.ownerId) ?? []]) {
        try { s(event, frame) } catch (err) { this.log.warn({ err }, 'event subscriber failed') }
      }
    })
    this.chains.set(event.ownerId, next)
    void next.finally(() => { if (this.chains.get(event.ownerId) === next) this.chains.delete(event.ownerId) })
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
