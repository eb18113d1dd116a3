import { Type } from 'typebox';
const Health = Type.Object({ status: Type.String() });
const health = async (app) => {
    app.get('/healthz', {
        schema: { tags: ['health'], summary: 'The process is up', response: { 200: Health } }
    }, async () => ({ status: 'ok' }));
    app.get('/readyz', {
        schema: { tags: ['health'], summary: 'The database is reachable', response: { 200: Health, 503: Health } }
    }, async (request, reply) => {
        try {
            await app.prisma.$queryRaw `SELECT 1`;
            return { status: 'ok' };
        }
        catch (err) {
            request.log.warn({ err }, 'readiness check failed');
            return reply.code(503).send({ status: 'database unreachable' });
        }
    });
};
export default health;
//# sourceMappingURL=health.js.map