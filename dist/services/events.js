import { CHANNELS } from "../jobs/listener.js";
import { loadJobWire } from "./jobs-view.js";
/**
 * Announces that an object changed (or was deleted). Call it inside the transaction that makes
 * the change: the NOTIFY is delivered when, and only if, it commits.
 */
export async function publishChange(db, change) {
    const list = Array.isArray(change) ? change : [change];
    if (list.length === 0)
        return;
    await db.$executeRawUnsafe(`
    WITH e AS (
      INSERT INTO events (owner_id, resource_type, resource_id, resource_uri)
      SELECT x.o::uuid, x.t, x.r, '/api/2.0/' || x.t || '/' || x.r || '/'
      FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS x(o, t, r, n)
      ORDER BY x.n
      RETURNING id, owner_id, resource_type, resource_id
    )
    SELECT pg_notify('${CHANNELS.events}', json_build_object('id', id::text, 'o', owner_id, 't', resource_type, 'r', resource_id)::text)
    FROM e ORDER BY id`, list.map(c => c.ownerId), list.map(c => c.resourceType), list.map(c => c.resourceId));
}
export class EventHub {
    prisma;
    log;
    loaders = new Map();
    subscribers = new Map();
    waiters = new Map();
    // per-account delivery chains keep frames in NOTIFY (commit) order while objects load
    chains = new Map();
    unlisten;
    constructor(prisma, log) {
        this.prisma = prisma;
        this.log = log;
        this.loaders.set('jobs', (p, o, id) => loadJobWire(p, o, id));
    }
    /** Lets the drives and servers services put their full objects into frames. */
    registerLoader(type, loader) {
        this.loaders.set(type, loader);
    }
    attach(listener) {
        this.unlisten = listener.on(CHANNELS.events, (payload) => this.receive(payload));
    }
    detach() {
        this.unlisten?.();
    }
    /** Receives every frame of `ownerId`'s objects until the returned function is called. */
    subscribe(ownerId, fn) {
        let set = this.subscribers.get(ownerId);
        if (!set)
            this.subscribers.set(ownerId, set = new Set());
        set.add(fn);
        return () => {
            set.delete(fn);
            if (set.size === 0 && this.subscribers.get(ownerId) === set)
                this.subscribers.delete(ownerId);
        };
    }
    /** Resolves at the next change of `resourceId` (any account) or after `ms`. */
    waitForChange(resourceId, ms) {
        return new Promise(resolve => {
            let set = this.waiters.get(resourceId);
            if (!set)
                this.waiters.set(resourceId, set = new Set());
            const done = () => {
                clearTimeout(timer);
                set.delete(done);
                if (set.size === 0 && this.waiters.get(resourceId) === set)
                    this.waiters.delete(resourceId);
                resolve();
            };
            const timer = setTimeout(done, ms);
            set.add(done);
        });
    }
    async frameFor(event) {
        const frame = { resource_type: event.resourceType, resource_uri: `/api/2.0/${event.resourceType}/${event.resourceId}/` };
        const loader = this.loaders.get(event.resourceType);
        if (loader) {
            try {
                const object = await loader(this.prisma, event.ownerId, event.resourceId);
                if (object !== undefined && object !== null)
                    frame.object = object;
            }
            catch (err) {
                this.log.warn({ err, event }, 'could not load the object of an event');
            }
        }
        return frame;
    }
    /** Stored events of `ownerId` after `afterId`, oldest first (for Last-Event-ID resumption). */
    async since(ownerId, afterId, limit = 1000, resourceId) {
        const rows = await this.prisma.event.findMany({
            where: { ownerId, id: { gt: afterId }, ...(resourceId ? { resourceId } : {}) },
            orderBy: { id: 'asc' },
            take: limit
        });
        return rows.map(r => ({ id: r.id.toString(), ownerId: r.ownerId, resourceType: r.resourceType, resourceId: r.resourceId }));
    }
    /** The newest event id, so a fresh stream can start from "now". */
    async lastId() {
        const row = await this.prisma.event.findFirst({ orderBy: { id: 'desc' }, select: { id: true } });
        return row?.id ?? 0n;
    }
    receive(payload) {
        let event;
        try {
            const p = JSON.parse(payload);
            event = { id: String(p.id), ownerId: p.o, resourceType: p.t, resourceId: p.r };
        }
        catch {
            return;
        }
        for (const w of [...this.waiters.get(event.resourceId) ?? []])
            w();
        const subs = this.subscribers.get(event.ownerId);
        if (!subs || subs.size === 0)
            return;
        const prev = this.chains.get(event.ownerId) ?? Promise.resolve();
        const next = prev.then(async () => {
            const frame = await this.frameFor(event);
            for (const s of [...this.subscribers.get(event.ownerId) ?? []]) {
                try {
                    s(event, frame);
                }
                catch (err) {
                    this.log.warn({ err }, 'event subscriber failed');
                }
            }
        });
        this.chains.set(event.ownerId, next);
        void next.finally(() => { if (this.chains.get(event.ownerId) === next)
            this.chains.delete(event.ownerId); });
    }
}
//# sourceMappingURL=events.js.map