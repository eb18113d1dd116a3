// Retention: deletes finished job trees older than the retention, in batches, under a
// session-level advisory lock on a dedicated connection so one process purges at a time.
import type { FastifyBaseLogger } from 'fastify'
import pg from 'pg'
import type { PrismaClient } from '../db/client.ts'
import { sessionUrl } from '../db/session.ts'
import { foldListCounters, purgeBatch, purgeEvents } from './queue-sql.ts'

// arbitrary constant: the advisory lock key of the purge
export const PURGE_LOCK_KEY = 7_248_310_551

export interface PurgeOptions {
  databaseUrl: string
  prisma: PrismaClient
  log: FastifyBaseLogger
  retentionDays: number
  /** Change events are kept this long for SSE resumption (default 1 day). */
  eventRetentionHours?: number
  batchSize?: number
  /** The clock, for tests that move time instead of sleeping. */
  now?: () => Date
}

export interface PurgeResult {
  /** false when another process held the lock */
  ran: boolean
  jobs: number
  events: number
  batches: number
}

export async function purgeOnce (opts: PurgeOptions): Promise<PurgeResult> {
  const client = new pg.Client({ connectionString: sessionUrl(opts.databaseUrl) })
  // idle while the batches run (it only holds the lock): its backend ending must not throw from an
  // 'error' event and end the process; the unlock below then fails, and so does this run
  client.on('error', (err) => opts.log.warn({ err }, 'the purge lock\'s connection was lost'))
  await client.connect()
  try {
    const got = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [PURGE_LOCK_KEY])
    if (!got.rows[0].ok) return { ran: false, jobs: 0, events: 0, batches: 0 }
    try {
      const now = (opts.now ?? (() => new Date()))()
      const cutoff = new Date(now.getTime() - opts.retentionDays * 86_400_000)
      const eventCutoff = new Date(now.getTime() - (opts.eventRetentionHours ?? 24) * 3_600_000)
      const size = opts.batchSize ?? 500
      let jobs = 0
      let events = 0
      let batches = 0
      for (;;) {
        const n = await purgeBatch(opts.prisma, cutoff, size)
        jobs += n
        batches++
        if (n < size) break
      }
      // the deep pages' counters: the transactions' finished counts folded, the buckets just emptied dropped
      const counters = await foldListCounters(opts.prisma, { cutoff, wait: true })
      for (;;) {
        const n = await purgeEvents(opts.prisma, eventCutoff, size * 10)
        events += n
        if (n < size * 10) break
      }
      opts.log.info({ jobs, events, batches, counters, cutoff: cutoff.toISOString() }, `purged ${jobs} finished job trees`)
      return { ran: true, jobs, events, batches }
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [PURGE_LOCK_KEY])
    }
  } finally {
    await client.end()
  }
}
