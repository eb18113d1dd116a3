// The composition point: the whole service as one Fastify plugin (infrastructure, then the feature
// plugins, then each feature's job handlers registered with the engine), plus the factory that
// builds a Fastify instance with the server options our wire conventions need. The role decides
// which half runs here: `api` serves the features and runs no handlers, `worker` runs the handlers
// and serves only /healthz, /readyz and /metrics. server.ts is a thin shell around this.
import { randomUUID } from 'node:crypto'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import fp from 'fastify-plugin'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { Config, Role } from './config.ts'
import type { HandlerSet } from './engine/types.ts'
import type { JobsPluginOptions } from './plugins/jobs.ts'
import { actionRegistries } from './http/actions.ts'
import { UUID } from './http/bodies.ts'
import { ROUTER_OPTIONS, installErrorHandler } from './http/error-handler.ts'
import { clientErrorHandler, expectationFailed, frameworkErrors } from './http/client-errors.ts'
import { OneLineRequestLog, REDACT_PATHS, redactedRequest } from './http/log-redaction.ts'
import { sharedSchemas } from './http/schemas.ts'
import prismaPlugin from './plugins/prisma.ts'
import conventions from './plugins/conventions.ts'
import auth from './plugins/auth.ts'
import inputGuard from './plugins/input-guard.ts'
import dbHealth from './plugins/db-health.ts'
import loadShedding from './plugins/load-shedding.ts'
import timeouts from './plugins/timeouts.ts'
import idempotency from './plugins/idempotency.ts'
import compression from './plugins/compression.ts'
import jobs from './plugins/jobs.ts'
import storage from './plugins/storage.ts'
import swagger from './plugins/swagger.ts'
import responseValidation, { type ResponseValidationOptions } from './plugins/response-validation.ts'
import hypervisor from './features/servers/service.ts'
import health from './features/ops/health.ts'
import metrics from './features/ops/metrics.ts'
import accounts from './features/accounts/routes.ts'
import clones, { cloneHandlers } from './features/clones/service.ts'
import drives, { driveHandlers } from './features/drives/routes.ts'
import { imageSweeper } from './features/drives/image-removals.ts'
import jobsApi, { jobEvents } from './features/jobs/index.ts'
import servers, { serverHandlers } from './features/servers/routes.ts'
import transfers, { transferHandlers } from './features/transfers/index.ts'
import dashboard from './features/dashboard/index.ts'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
  }
}

export interface AppOptions {
  config: Config
  databaseUrl: string
  /** false: handlers are registered but no job workers run (tests that drive the engine by hand). */
  runWorkers?: boolean
  /** What this process does; config.role when omitted (default all). */
  role?: Role
  /** Test mode: check every response against its route's schema. */
  responseValidation?: ResponseValidationOptions
  /** The LISTEN connection's own URL and liveness settings (tests). */
  listener?: JobsPluginOptions['listener']
}

const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/

export function serverOptions (config: Config, logger: FastifyServerOptions['logger'] = { level: config.logLevel }): FastifyServerOptions {
  return {
    // tokens in URLs and credentials in headers never reach a log line
    logger: logger && typeof logger === 'object' ? { ...logger, serializers: { req: redactedRequest, ...logger.serializers }, redact: REDACT_PATHS } : logger,
    // one line per request, when it is answered, instead of two (issue 18)
    logController: new OneLineRequestLog(),
    bodyLimit: config.bodyLimit,
    routerOptions: ROUTER_OPTIONS,
    requestIdHeader: 'x-request-id',
    // keep a client's own request id when it is sane, otherwise make one
    genReqId: (req) => {
      const given = req.headers['x-request-id']
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
    },
    ajv: {
      customOptions: {
        // numeric strings are accepted for integers (§1.15); read-only and unknown fields dropped
        coerceTypes: true,
        removeAdditional: true,
        useDefaults: true,
        allErrors: false,
        // errors carry their schema, so a union's error can say every form it takes (http/error-handler.ts)
        verbose: true
      },
      // ajv-formats' `uuid` also takes `urn:uuid:<uuid>`, which PostgreSQL's uuid type refuses (a 500)
      onCreate: ajv => { ajv.addFormat('uuid', UUID) }
    },
    // idle keep-alive connections and very long-lived ones are closed; request heads must arrive in time (plugins/timeouts.ts)
    keepAliveTimeout: config.keepAliveTimeoutMs,
    maxRequestsPerSocket: config.maxRequestsPerSocket,
    forceCloseConnections: false,
    return503OnClosing: true,
    frameworkErrors,
    clientErrorHandler
  }
}

async function service (fastify: FastifyInstance, opts: AppOptions): Promise<void> {
  fastify.decorate('config', opts.config)
  for (const schema of sharedSchemas) fastify.addSchema(schema)
  await fastify.register(swagger)
  if (opts.responseValidation) await fastify.register(responseValidation, opts.responseValidation)
  installErrorHandler(fastify)
  await fastify.register(prismaPlugin, { databaseUrl: opts.databaseUrl })
  await fastify.register(dbHealth)
  await fastify.register(loadShedding)
  await fastify.register(timeouts)
  await fastify.register(storage)
  await fastify.register(conventions)
  await fastify.register(auth)
  await fastify.register(inputGuard)
  await fastify.register(idempotency)
  // before every route (its hook is added to each route as it is made) and before the dashboard's static files
  await fastify.register(compression)
  const role = opts.role ?? opts.config.role
  const runWorkers = role !== 'api' && opts.runWorkers !== false
  await fastify.register(jobs, { runWorkers, databaseUrl: opts.databaseUrl, listener: opts.listener })
  // images left by cleanups whose delete failed are retried where jobs run
  await fastify.register(imageSweeper, { run: runWorkers })
  await fastify.register(hypervisor)
  // this app's own ?do= registries: the features fill them as they are registered
  fastify.decorate('actions', actionRegistries())
  await fastify.register(health)
  if (role !== 'worker') {
    await fastify.register(async (api) => {
      await api.register(jobsApi)
      await api.register(clones)
      await api.register(drives)
      await api.register(accounts)
      await api.register(servers)
      await api.register(transfers)
    }, { prefix: '/api/2.0' })
    await fastify.register(jobEvents)
    await fastify.register(dashboard)
  }
  await fastify.register(metrics)
  if (role !== 'api') {
    // the one place job handlers meet the engine
    const sets: HandlerSet[] = [driveHandlers(fastify), serverHandlers(fastify), cloneHandlers(fastify), transferHandlers(fastify)]
    for (const set of sets) {
      for (const [operation, handler] of Object.entries(set)) fastify.jobs.register(operation, handler)
    }
  }
}

/** The service plugin; decorators (prisma, config, ...) stay visible to whoever registers it. */
export const app = fp(service, { name: 'clonejobs' })

export async function buildApp (opts: AppOptions & { logger?: FastifyServerOptions['logger'] }): Promise<FastifyInstance> {
  const fastify = Fastify(serverOptions(opts.config, opts.logger)).withTypeProvider<TypeBoxTypeProvider>()
  // Node's own answer to an Expect it does not know is an empty 417
  fastify.server.on('checkExpectation', expectationFailed)
  await fastify.register(app, opts)
  await fastify.ready()
  return fastify
}
