import fp from 'fastify-plugin';
import { errors } from "../http/errors.js";
function acceptable(accept, produces) {
    if (!accept)
        return true;
    return accept.split(',').some(part => {
        const type = part.split(';')[0].trim().toLowerCase();
        if (type === '' || type === '*/*' || type === 'application/*' || type === 'application/json')
            return true;
        return produces.some(p => p === type || (type.endsWith('/*') && p.startsWith(type.slice(0, -1))));
    });
}
export default fp(async (app) => {
    const defaultJson = app.getDefaultJsonParser('error', 'error');
    // Action POSTs arrive with `Content-Type: application/json` and no body at all (Go SDK), or `null`.
    app.removeContentTypeParser('application/json');
    app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
        const text = typeof body === 'string' ? body : body.toString('utf8');
        if (text.trim() === '' || text.trim() === 'null')
            return done(null, {});
        defaultJson(request, text, done);
    });
    app.addHook('onRequest', async (request, reply) => {
        reply.header('X-REQUEST-ID', request.id);
        if (request.url.startsWith('/api/') && request.query?.format === undefined &&
            !acceptable(request.headers.accept, request.routeOptions.config?.produces ?? [])) {
            throw errors.notAcceptable();
        }
    });
}, { name: 'conventions' });
//# sourceMappingURL=conventions.js.map