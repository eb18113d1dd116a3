// The job engine as a service: handlers register on `app.jobs`, workers start when the app is
// ready and give their jobs back when it closes.
import fp from 'fastify-plugin'
import { JobEngine } from '../jobs/engine.ts'

declare module 'fastify' {
  interface FastifyInstance {
    jobs: JobEngine
  }
}

export interface JobsPluginOptions {
  /** false: handlers are registered but this process runs no jobs (tests drive the engine by hand). */
  runWorkers?: boolean
}

export default fp<JobsPluginOptions>(async (app, opts) => {
  const engine = new JobEngine({
    prisma: app.prisma,
    log: app.log.child({ component: 'jobs' }),
    concurrency: app.config.jobConcurrency,
    leaseSeconds: app.config.jobLeaseSeconds
  })
  app.decorate('jobs', engine)
  if (opts.runWorkers !== false) {
    app.addHook('onReady', async () => { engine.start() })
  }
  // preClose: stop claiming and release running jobs before the database goes away
  app.addHook('preClose', async () => { await engine.stop() })
}, { name: 'jobs', dependencies: ['prisma'] })
