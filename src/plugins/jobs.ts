// The job engine as a service: a LISTEN connection shared by the engine and the event hub, the
// workers (started when the app is ready, jobs given back when it closes), the purge schedule and
// the engine's metrics, and the fold of the jobs list's counters. Handlers register on `app.jobs`;
// drive/server loaders on `app.events`.
import { Cron } from 'croner'
import fp from 'fastify-plugin'
import { JobEngine } from '../engine/engine.ts'
import { PgListener, type ListenerOptions } from '../engine/listener.ts'
import { JobMetrics } from '../engine/metrics.ts'
import { purgeOnce, type PurgeResult } from '../engine/purge.ts'
import { foldListCounters } from '../engine/queue-sql.ts'
import { EventHub } from '../engine/events.ts'

declare module 'fastify' {
  interface FastifyInstance {
    jobs: JobEngine
    events: EventHub
    jobListener: PgListener
    jobMetrics: JobMetrics
    /** Runs the retention purge now (the schedule calls it too). */
    purgeJobs: (now?: () => Date) => Promise<PurgeResult>
  }
}

export interface JobsPluginOptions {
  databaseUrl: string
  /** false: handlers are registered but this process runs no jobs and no purge (tests drive them by hand). */
  runWorkers?: boolean
  /** The LISTEN connection: its own URL (tests route it through a proxy) and liveness settings. */
  listener?: ListenerOptions & { databaseUrl?: string, catchUpWindowMs?: number }
}

export default fp<JobsPluginOptions>(async (app, opts) => {
  const log = app.log.child({ component: 'jobs' })
  const listener = new PgListener(opts.listener?.databaseUrl ?? opts.databaseUrl, log, opts.listener)
  await listener.start()
  const metrics = new JobMetrics(app.prisma, { defaultMetrics: true })
  const engine = new JobEngine({
    prisma: app.prisma,
    databaseUrl: opts.databaseUrl,
    log,
    listener,
    metrics,
    concurrency: app.config.jobConcurrency,
    leaseSeconds: app.config.jobLeaseSeconds
  })
  // after a reconnect the hub reads the change events it missed, and the engine polls for work
  const hub = new EventHub(app.prisma, log, { catchUpWindowMs: opts.listener?.catchUpWindowMs })
  hub.attach(listener)

  const purgeJobs = async (now?: () => Date): Promise<PurgeResult> => {
    try {
      const r = await purgeOnce({ databaseUrl: opts.databaseUrl, prisma: app.prisma, log, retentionDays: app.config.jobRetentionDays, now })
      metrics.purgeRuns.inc({ outcome: r.ran ? 'ran' : 'skipped' })
      metrics.purged.inc({ kind: 'jobs' }, r.jobs)
      metrics.purged.inc({ kind: 'events' }, r.events)
      return r
    } catch (err) {
      metrics.purgeRuns.inc({ outcome: 'failed' })
      throw err
    }
  }

  app.decorate('jobs', engine)
  app.decorate('events', hub)
  app.decorate('jobListener', listener)
  app.decorate('jobMetrics', metrics)
  app.decorate('purgeJobs', purgeJobs)

  let cron: Cron | undefined
  // the deep pages of the jobs list sum every transaction's finished-job counts not yet folded
  // (read-sql.ts's seek): folded every LIST_FOLD_SECONDS, not only by the purge, so a rare
  // PURGE_CRON leaves them few. One fold at a time across processes (a fold under way elsewhere
  // makes this one a no-op); the next is due that long after the last ends
  let fold: NodeJS.Timeout | undefined
  let folding: Promise<void> | undefined
  let stopped = false
  const scheduleFold = (): void => {
    fold = setTimeout(() => {
      folding = foldListCounters(app.prisma)
        .then(r => { if (r !== undefined && r.folded > 0) log.debug(r, 'folded the jobs list\'s counters') },
          (err: unknown) => { log.error({ err }, 'folding the jobs list\'s counters failed') })
        .finally(() => {
          folding = undefined
          if (!stopped) scheduleFold()
        })
    }, app.config.listFoldSeconds * 1000)
  }
  if (opts.runWorkers !== false) {
    app.addHook('onReady', async () => {
      engine.start()
      // protect: a run still going when the next one is due is not overlapped
      cron = new Cron(app.config.purgeCron, { protect: true }, async () => {
        await purgeJobs().catch(err => log.error({ err }, 'purge failed'))
      })
      scheduleFold()
    })
  }
  // preClose: stop claiming and release running jobs before the database goes away
  app.addHook('preClose', async () => {
    cron?.stop()
    stopped = true
    clearTimeout(fold)
    await folding
    await engine.stop()
  })
  app.addHook('onClose', async () => {
    hub.detach()
    await listener.close()
  })
}, { name: 'jobs', dependencies: ['prisma'] })
