// One dedicated PostgreSQL connection per process that LISTENs on the service's channels and
// hands each NOTIFY payload to the local subscribers. It heals by itself:
// - TCP keepalive on the socket, and a liveness query (`SELECT 1`) every few seconds that must
//   answer within a timeout: a half-open connection (no FIN, no RST, bytes silently dropped) is
//   noticed within interval + timeout and destroyed, instead of stopping delivery without an error;
// - reconnects with capped exponential backoff and jitter, LISTENs every channel again, then tells
//   the `onReconnected` subscribers, which catch up on what they may have missed (the event hub
//   reads the missed change events, the engine polls for work at once).
import type { FastifyBaseLogger } from 'fastify'
import pg from 'pg'
import { sessionUrl } from '../db/session.ts'

export type NotifyHandler = (payload: string) => void

/** What a channel name may be: it is written into LISTEN as an identifier. */
const CHANNEL_NAME = /^[a-z_][a-z0-9_]{0,62}$/

export interface ListenerOptions {
  /** Idle time before the first TCP keepalive probe (default 10 s). */
  keepAliveInitialDelayMs?: number
  /** How often the liveness query runs (default 5 s). */
  pingIntervalMs?: number
  /** How long the liveness query may take before the connection is given up (default 5 s). */
  pingTimeoutMs?: number
  /** Longest wait for a (re)connection, LISTENs included (default 10 s). */
  connectTimeoutMs?: number
  /** First reconnect delay; it doubles on each failure up to backoffMaxMs, with jitter (default 250 ms). */
  backoffMinMs?: number
  /** Largest reconnect delay (default 10 s). */
  backoffMaxMs?: number
}

export interface ReconnectInfo {
  /**
   * Local time (ms) when the liveness query that last succeeded before the loss was sent: every
   * notification committed before then was delivered; later ones may have been missed.
   */
  aliveAt: number
  /** How many times the connection was lost so far. */
  losses: number
}

export class PgListener {
  private client: pg.Client | undefined
  private readonly handlers = new Map<string, Set<NotifyHandler>>()
  private readonly reconnectHandlers = new Set<(info: ReconnectInfo) => void>()
  private closed = false
  private connecting: Promise<void> | undefined
  private retry: NodeJS.Timeout | undefined
  private pingTimer: NodeJS.Timeout | undefined
  private queue: Promise<void> = Promise.resolve()
  private failures = 0
  private lost = false
  /** aliveAt when the connection was lost */
  private aliveBeforeLoss = 0
  private readonly opts: Required<ListenerOptions>
  /** Local time the last successful liveness query (or LISTEN) was sent. */
  aliveAt = 0
  /** Connections lost so far (tests, metrics). */
  losses = 0

  constructor (private readonly databaseUrl: string, private readonly log?: FastifyBaseLogger, options: ListenerOptions = {}) {
    this.opts = {
      keepAliveInitialDelayMs: options.keepAliveInitialDelayMs ?? 10_000,
      pingIntervalMs: options.pingIntervalMs ?? 5000,
      pingTimeoutMs: options.pingTimeoutMs ?? 5000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      backoffMinMs: options.backoffMinMs ?? 250,
      backoffMaxMs: options.backoffMaxMs ?? 10_000
    }
  }

  async start (): Promise<void> {
    this.closed = false
    await this.connect()
  }

  /** Whether the LISTEN connection is up (and answered its last liveness query). */
  get connected (): boolean {
    return this.client !== undefined
  }

  /** Subscribes to a channel (a plain lowercase identifier); returns the unsubscribe function. */
  on (channel: string, handler: NotifyHandler): () => void {
    if (!CHANNEL_NAME.test(channel)) throw new Error(`not a channel name: ${JSON.stringify(channel)}`)
    let set = this.handlers.get(channel)
    if (!set) {
      set = new Set()
      this.handlers.set(channel, set)
      const client = this.client
      // one query at a time on a pg client
      // LISTEN takes an identifier, never a parameter: the name is checked against CHANNEL_NAME above
      if (client) this.queue = this.queue.then(() => client.query(`LISTEN "${channel}"`)).then(() => {}, err => this.log?.warn({ err, channel }, 'LISTEN failed'))
    }
    set.add(handler)
    return () => { set.delete(handler) }
  }

  /**
   * Calls `fn` after every reconnection, once every channel is LISTENed again: notifications sent
   * while the connection was down are lost, so look for what they announced. Returns the unsubscribe function.
   */
  onReconnected (fn: (info: ReconnectInfo) => void): () => void {
    this.reconnectHandlers.add(fn)
    return () => { this.reconnectHandlers.delete(fn) }
  }

  private async connect (): Promise<void> {
    if (this.connecting) return this.connecting
    this.connecting = (async () => {
      const client = new pg.Client({
        connectionString: sessionUrl(this.databaseUrl),
        keepAlive: true,
        keepAliveInitialDelayMillis: this.opts.keepAliveInitialDelayMs,
        connectionTimeoutMillis: this.opts.connectTimeoutMs
      })
      client.on('notification', (msg) => {
        for (const h of this.handlers.get(msg.channel) ?? []) {
          try { h(msg.payload ?? '') } catch (err) { this.log?.error({ err, channel: msg.channel }, 'notification handler failed') }
        }
      })
      client.on('error', (err) => this.lose(client, err))
      client.on('end', () => this.lose(client))
      try {
        const sentAt = Date.now()
        await client.connect()
        const channels = [...this.handlers.keys()]
        // a LISTEN that never answers (the connection stalled right after connecting) is a failed connect;
        // identifiers cannot be bound: every name here passed CHANNEL_NAME in on()
        if (channels.length > 0) await this.withTimeout(client.query(channels.map(c => `LISTEN "${c}";`).join(' ')), this.opts.connectTimeoutMs, 'LISTEN')
        if (this.closed) throw new Error('listener closed')
        this.aliveAt = sentAt
        this.queue = Promise.resolve()
        this.client = client
      } catch (err) {
        destroy(client)
        throw err
      }
      this.schedulePing(client)
    })().finally(() => { this.connecting = undefined })
    return this.connecting
  }

  private withTimeout<T> (p: Promise<T>, ms: number, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms)
      p.then(v => { clearTimeout(timer); resolve(v) }, err => { clearTimeout(timer); reject(err) })
    })
  }

  // liveness: a query on the LISTEN connection that must answer in time, timed from the end of the last
  private schedulePing (client: pg.Client): void {
    clearTimeout(this.pingTimer)
    this.pingTimer = setTimeout(() => {
      if (this.client !== client) return
      const sentAt = Date.now()
      // queued behind any LISTEN in flight: one query at a time on a pg client
      const ping = this.queue.then(() => client.query('SELECT 1'))
      this.queue = ping.then(() => {}, () => {})
      this.withTimeout(ping, this.opts.pingTimeoutMs, 'liveness query').then(() => {
        if (this.client !== client) return
        this.aliveAt = sentAt
        this.schedulePing(client)
      }, (err) => this.lose(client, err))
    }, this.opts.pingIntervalMs)
    this.pingTimer.unref()
  }

  /** The connection is gone or cannot be trusted: drop it at once and reconnect. */
  private lose (client: pg.Client, err?: unknown): void {
    destroy(client)
    if (this.client !== client) return
    this.client = undefined
    clearTimeout(this.pingTimer)
    this.losses++
    if (!this.lost) this.aliveBeforeLoss = this.aliveAt
    this.lost = true
    if (!this.closed) this.log?.warn({ err }, 'listener connection lost; reconnecting')
    this.scheduleReconnect()
  }

  private scheduleReconnect (): void {
    if (this.closed || this.retry) return
    // capped exponential backoff with "equal jitter": half fixed, half random
    const cap = Math.min(this.opts.backoffMaxMs, this.opts.backoffMinMs * 2 ** Math.min(this.failures, 20))
    const delay = Math.round(cap / 2 + Math.random() * cap / 2)
    this.retry = setTimeout(() => {
      this.retry = undefined
      this.connect().then(() => {
        this.failures = 0
        if (!this.lost) return
        this.lost = false
        this.log?.info({ losses: this.losses }, 'listener reconnected')
        const info: ReconnectInfo = { aliveAt: this.aliveBeforeLoss, losses: this.losses }
        for (const fn of this.reconnectHandlers) {
          try { fn(info) } catch (err) { this.log?.error({ err }, 'reconnect handler failed') }
        }
      }, (err) => {
        this.failures++
        if (!this.closed) this.log?.warn({ err, failures: this.failures }, 'listener could not reconnect')
        this.scheduleReconnect()
      })
    }, delay)
  }

  async close (): Promise<void> {
    this.closed = true
    clearTimeout(this.retry)
    clearTimeout(this.pingTimer)
    this.retry = undefined
    const c = this.client
    this.client = undefined
    if (!c) return
    // a graceful end, but never waiting on a stalled connection
    await Promise.race([c.end().catch(() => {}), new Promise(resolve => setTimeout(resolve, 1000).unref())])
    destroy(c)
  }
}

function destroy (client: pg.Client): void {
  // end() would wait for the server's answer, which a half-open connection never sends
  client.connection?.stream?.destroy()
}

export const CHANNELS = {
  /** payload: a job id; wakes idle workers (new job, a child finished) */
  jobs: 'clonejobs_jobs',
  /** payload: a job id; the process running it aborts its handler */
  cancel: 'clonejobs_cancel',
  /** payload: a JSON array of events rows {id, o, t, r} (id, owner, resource type, resource id), see events.ts */
  events: 'clonejobs_events'
} as const
