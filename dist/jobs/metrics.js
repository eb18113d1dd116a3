// Prometheus metrics of the job engine, on a registry of the app's own (several apps may live in
// one process, e.g. in tests).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
export class JobMetrics {
    registry = new Registry();
    claimLatency;
    jobsGauge;
    duration;
    finishedTotal;
    purged;
    purgeRuns;
    constructor(prisma, opts = {}) {
        if (opts.defaultMetrics)
            collectDefaultMetrics({ register: this.registry });
        const registers = [this.registry];
        this.jobsGauge = new Gauge({
            name: 'clonejobs_jobs',
            help: 'Jobs in the database, by state and operation',
            labelNames: ['state', 'operation'],
            registers,
            async collect() {
                this.reset();
                const rows = await prisma.$queryRawUnsafe('SELECT state, operation, count(*)::int AS n FROM jobs GROUP BY state, operation');
                for (const r of rows)
                    this.set({ state: r.state, operation: r.operation }, r.n);
            }
        });
        this.claimLatency = new Histogram({
            name: 'clonejobs_job_claim_latency_seconds',
            help: 'Time from a job becoming due to a worker claiming it',
            labelNames: ['operation'],
            buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
            registers
        });
        this.duration = new Histogram({
            name: 'clonejobs_job_duration_seconds',
            help: 'Time from a job starting to it finishing, by outcome',
            labelNames: ['operation', 'state'],
            buckets: [0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400],
            registers
        });
        this.finishedTotal = new Counter({
            name: 'clonejobs_jobs_finished_total',
            help: 'Jobs finished by this process, by operation and outcome',
            labelNames: ['operation', 'state'],
            registers
        });
        this.purged = new Counter({
            name: 'clonejobs_purged_total',
            help: 'Rows removed by the retention purge (kind: jobs = top-level job trees, events)',
            labelNames: ['kind'],
            registers
        });
        this.purgeRuns = new Counter({
            name: 'clonejobs_purge_runs_total',
            help: 'Purge runs, by outcome (ran, skipped: another process held the lock, failed)',
            labelNames: ['outcome'],
            registers
        });
    }
    claimed(operation, latencyMs) {
        this.claimLatency.observe({ operation }, Math.max(0, latencyMs) / 1000);
    }
    finished(operation, state, seconds) {
        this.duration.observe({ operation, state }, Math.max(0, seconds));
        this.finishedTotal.inc({ operation, state });
    }
}
//# sourceMappingURL=metrics.js.map