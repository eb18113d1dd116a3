// The whole service as one Fastify plugin, plus the factory that builds a Fastify instance with
// the server options our wire conventions need. server.ts is a thin shell around this.
import { randomUUID } from 'node:crypto';
import Fastify, {} from 'fastify';
import fp from 'fastify-plugin';
import { installErrorHandler } from "./http/error-handler.js";
import { sharedSchemas } from "./schemas/common.js";
import prismaPlugin from "./plugins/prisma.js";
import conventions from "./plugins/conventions.js";
import auth from "./plugins/auth.js";
import jobs from "./plugins/jobs.js";
import storage from "./plugins/storage.js";
import swagger from "./plugins/swagger.js";
import responseValidation, {} from "./plugins/response-validation.js";
import servers from "./services/servers.js";
import health from "./routes/health.js";
import api from "./routes/index.js";
import events from "./routes/events.js";
import metrics from "./routes/metrics.js";
const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;
export function serverOptions(config, logger = { level: config.logLevel }) {
    return {
        logger,
        bodyLimit: config.bodyLimit,
        routerOptions: { ignoreTrailingSlash: true, maxParamLength: 200 },
        requestIdHeader: 'x-request-id',
        // keep a client's own request id when it is sane, otherwise make one
        genReqId: (req) => {
            const given = req.headers['x-request-id'];
            return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
        },
        ajv: {
            customOptions: {
                // numeric strings are accepted for integers (§1.15); read-only and unknown fields dropped
                coerceTypes: true,
                removeAdditional: true,
                useDefaults: true,
                allErrors: false
            }
        },
        forceCloseConnections: false,
        return503OnClosing: true
    };
}
async function service(fastify, opts) {
    fastify.decorate('config', opts.config);
    for (const schema of sharedSchemas)
        fastify.addSchema(schema);
    await fastify.register(swagger);
    if (opts.responseValidation)
        await fastify.register(responseValidation, opts.responseValidation);
    installErrorHandler(fastify);
    await fastify.register(prismaPlugin, { databaseUrl: opts.databaseUrl });
    await fastify.register(storage);
    await fastify.register(conventions);
    await fastify.register(auth);
    await fastify.register(jobs, { runWorkers: opts.runWorkers, databaseUrl: opts.databaseUrl });
    await fastify.register(servers);
    await fastify.register(health);
    await fastify.register(api, { prefix: '/api/2.0' });
    await fastify.register(events);
    await fastify.register(metrics);
}
/** The service plugin; decorators (prisma, config, ...) stay visible to whoever registers it. */
export const app = fp(service, { name: 'clonejobs' });
export async function buildApp(opts) {
    const fastify = Fastify(serverOptions(opts.config, opts.logger)).withTypeProvider();
    await fastify.register(app, opts);
    await fastify.ready();
    return fastify;
}
//# sourceMappingURL=app.js.map