// Prometheus metrics of the job engine, on a registry of the app's own (several apps may live in
// one process, e.g. in tests).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { PrismaClient } from '../db/client.ts'
import type { EngineMetrics } from './engine.ts'

export class JobMetrics implements EngineMetrics {
  readonly registry = new Registry()
  readonly claimLatency: Histogram<'operation'>
  readonly jobsGauge: Gauge<'state' | 'operation'>
  readonly duration: Histogram<'operation' | 'state'>
  readonly finishedTotal: Counter<'operation' | 'state'>
  readonly purged: Counter<'kind'>
  readonly purgeRuns: Counter<'outcome'>

  constructor (prisma: PrismaClient, opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics) collectDefaultMetrics({ register: this.registry })
    const registers = [this.registry]
    this.jobsGauge = new Gauge({
      name: 'clonejobs_jobs',
      help: 'Jobs in the database, by state and operation',
      labelNames: ['state', 'operation'] as const,
      registers,
      async collect () {
        this.reset()
        const rows = await prisma.$queryRaw<Array<{ state: string, operation: string, n: number }>>`
          SELECT state, operation, count(*)::int AS n FROM jobs GROUP BY state, operation`
        for (const r of rows) this.set({ state: r.state, operation: r.operation }, r.n)
      }
    })
    this.claimLatency = new Histogram({
      name: 'clonejobs_job_claim_latency_seconds',
      help: 'Time from a job becoming due to a worker claiming it',
      labelNames: ['operation'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers
    })
    this.duration = new Histogram({
      name: 'clonejobs_job_duration_seconds',
      help: 'Time from a job starting to it finishing, by outcome',
      labelNames: ['operation', 'state'] as const,
      buckets: [0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400],
      registers
    })
    this.finishedTotal = new Counter({
      name: 'clonejobs_jobs_finished_total',
      help: 'Jobs finished by this process, by operation and outcome',
      labelNames: ['operation', 'state'] as const,
      registers
    })
    this.purged = new Counter({
      name: 'clonejobs_purged_total',
      help: 'Rows removed by the retention purge (kind: jobs = top-level job trees, events)',
      labelNames: ['kind'] as const,
      registers
    })
    this.purgeRuns = new Counter({
      name: 'clonejobs_purge_runs_total',
      help: 'Purge runs, by outcome (ran, skipped: another process held the lock, failed)',
      labelNames: ['outcome'] as const,
      registers
    })
  }

  claimed (operation: string, latencyMs: number): void {
    this.claimLatency.observe({ operation }, Math.max(0, latencyMs) / 1000)
  }

  finished (operation: string, state: string, seconds: number): void {
    this.duration.observe({ operation, state }, Math.max(0, seconds))
    this.finishedTotal.inc({ operation, state })
  }
}
