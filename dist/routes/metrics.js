const metrics = async (app) => {
    app.get('/metrics', {
        config: { produces: ['text/plain'] },
        schema: { tags: ['health'], summary: 'Prometheus metrics' }
    }, async (_request, reply) => {
        const registry = app.jobMetrics.registry;
        const text = await registry.metrics();
        return reply.type(registry.contentType).send(text);
    });
};
export default metrics;
//# sourceMappingURL=metrics.js.map