import pg from 'pg';
export class PgListener {
    databaseUrl;
    log;
    client;
    handlers = new Map();
    closed = false;
    connecting;
    retry;
    queue = Promise.resolve();
    /** Called after a reconnect, when notifications may have been missed. */
    onReconnect;
    constructor(databaseUrl, log) {
        this.databaseUrl = databaseUrl;
        this.log = log;
    }
    async start() {
        this.closed = false;
        await this.connect();
    }
    /** Subscribes to a channel; returns the unsubscribe function. */
    on(channel, handler) {
        let set = this.handlers.get(channel);
        if (!set) {
            set = new Set();
            this.handlers.set(channel, set);
            const client = this.client;
            // one query at a time on a pg client
            if (client)
                this.queue = this.queue.then(() => client.query(`LISTEN "${channel}"`)).then(() => { }, err => this.log?.warn({ err, channel }, 'LISTEN failed'));
        }
        set.add(handler);
        return () => { set.delete(handler); };
    }
    async connect() {
        if (this.connecting)
            return this.connecting;
        this.connecting = (async () => {
            const client = new pg.Client({ connectionString: this.databaseUrl });
            client.on('notification', (msg) => {
                for (const h of this.handlers.get(msg.channel) ?? []) {
                    try {
                        h(msg.payload ?? '');
                    }
                    catch (err) {
                        this.log?.error({ err, channel: msg.channel }, 'notification handler failed');
                    }
                }
            });
            client.on('error', (err) => {
                this.log?.warn({ err }, 'listener connection lost');
                if (this.client === client)
                    this.scheduleReconnect();
            });
            client.on('end', () => { if (this.client === client)
                this.scheduleReconnect(); });
            await client.connect();
            for (const channel of this.handlers.keys())
                await client.query(`LISTEN "${channel}"`);
            this.client = client;
        })().finally(() => { this.connecting = undefined; });
        return this.connecting;
    }
    scheduleReconnect() {
        this.client = undefined;
        if (this.closed || this.retry)
            return;
        this.retry = setTimeout(() => {
            this.retry = undefined;
            this.connect().then(() => this.onReconnect?.(), () => this.scheduleReconnect());
        }, 500);
    }
    async close() {
        this.closed = true;
        clearTimeout(this.retry);
        const c = this.client;
        this.client = undefined;
        await c?.end().catch(() => { });
    }
}
export const CHANNELS = {
    /** payload: a job id; wakes idle workers (new job, a child finished) */
    jobs: 'clonejobs_jobs',
    /** payload: a job id; the process running it aborts its handler */
    cancel: 'clonejobs_cancel',
    /** payload: JSON {id, o, t, r}: an events row (id, owner, resource type, resource id) */
    events: 'clonejobs_events'
};
//# sourceMappingURL=listener.js.map