// Change events: `publishChange` writes an `events` row and NOTIFYs it in the caller's transaction;
// the EventHub of every process hears the NOTIFY and delivers {resource_type, resource_uri, object}
// frames to the SSE streams and websockets of the owning account.
import type { FastifyBaseLogger } from 'fastify'
import type { PrismaClient, Tx } from '../db/client.ts'
import { CHANNELS, type PgListener } from './listener.ts'

export type ResourceType = 'drives' | 'servers' | 'jobs'

export interface ChangeInput {
  ownerId: string
  resourceType: ResourceType
  resourceId: string
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
      INSERT INTO events (owner_id, resource_type, resource_id, resource_uri)
      SELECT x.o::uuid, x.t, x.r, '/api/2.0/' || x.t || '/' || x.r || '/'
      FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS x(o, t, r, n)
      ORDER BY x.n
      RETURNING id, owner_id, resource_type, resource_id
    )
    ${notifyEventsSql('e')}`,
  list.map(c => c.ownerId), list.map(c => c.resourceType), list.map(c => c.resourceId))
}

/**
 * Events per NOTIFY. A payload on the events channel is a JSON array of events rows, each
 * {id, o: owner, t: resource type, r: resource id}, in id order: a statement that writes many
 * events (a batch of claims or finishes, a bulk enqueue) sends a few NOTIFYs instead of one per
 * event, and 40 rows stay well under PostgreSQL's 8000-byte payload limit.
 */
export const EVENTS_PER_NOTIFY = 40

/**
 * The SELECT that NOTIFYs the events rows of `src` (columns id, owner_id, resource_type,
 * resource_id) in id order, EVENTS_PER_NOTIFY per payload; it yields one row per NOTIFY.
 */
export function notifyEventsSql (src: string): string {
  return `SELECT pg_notify('${CHANNELS.events}', x.p) FROM (
      SELECT g.n, json_agg(json_build_object('id', g.id::text, 'o', g.owner_id, 't', g.resource_type, 'r', g.resource_id) ORDER BY g.id)::text AS p
      FROM (SELECT s.*, (row_number() OVER (ORDER BY s.id) - 1) / ${EVENTS_PER_NOTIFY} AS n FROM ${src} s) g
      GROUP BY g.n ORDER BY g.n
    ) x`
}

/** The events of one NOTIFY payload on the events channel (an array; a single object is accepted too). */
export function parseEvents (payload: string): ChangeEvent[] {
  try {
    const parsed = JSON.parse(payload) as unknown
    const list = (Array.isArray(parsed) ? parsed : [parsed]) as Array<{ id: string, o: string, t: string, r: string }>
    return list.filter(p => p && typeof p === 'object' && p.r).map(p => ({ id: String(p.id), ownerId: p.o, resourceType: p.t, resourceId: p.r }))
  } catch {
    return []
  }
}

export interface ChangeEvent {
  /** events.id, as a decimal string (it is a bigint) */
  id: string
  ownerId: string
  resourceType: string
  resourceId: string
}

export interface Frame {
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
    return new Promise(resolve => {
      let set = this.waiters.get(resourceId)
      if (!set) this.waiters.set(resourceId, set = new Set())
      const done = () => {
        clearTimeout(timer)
        set.delete(done)
        if (set.size === 0 && this.waiters.get(resourceId) === set) this.waiters.delete(resourceId)
        resolve()
      }
      const timer = setTimeout(done, ms)
      set.add(done)
    })
  }

  async frameFor (event: ChangeEvent): Promise<Frame> {
    const frame: Frame = { resource_type: event.resourceType, resource_uri: `/api/2.0/${event.resourceType}/${event.resourceId}/` }
    const loader = this.loaders.get(event.resourceType)
    if (loader) {
      try {
        const object = await loader(this.prisma, event.ownerId, event.resourceId)
        if (object !== undefined && object !== null) frame.object = object
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
    return rows.map(r => ({ id: r.id.toString(), ownerId: r.ownerId, resourceType: r.resourceType, resourceId: r.resourceId }))
  }

  /** The newest event id, so a fresh stream can start from "now". */
  async lastId (): Promise<bigint> {
    const row = await this.prisma.event.findFirst({ orderBy: { id: 'desc' }, select: { id: true } })
    return row?.id ?? 0n
  }

  private receive (payload: string): void {
    for (const event of parseEvents(payload)) this.deliver(event)
  }

  private deliver (event: ChangeEvent): void {
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
