// HTTP Basic authentication (email + password) for every /api/2.0/ route, except routes that
// declare `config: { auth: false }` (token-carrying upload and download links).
import { createHmac, randomBytes } from 'node:crypto';
import fp from 'fastify-plugin';
import { errors } from "../http/errors.js";
import { verifyPassword } from "../services/accounts.js";
// scrypt costs ~50 ms; a verified credential is remembered briefly, keyed by a keyed hash so the
// cache never holds passwords. Password changes take effect within the TTL.
const CACHE_TTL_MS = 60_000;
const CACHE_MAX = 10_000;
export function parseBasic(header) {
    if (!header)
        return undefined;
    const m = /^Basic\s+([A-Za-z0-9+/=._~-]+)\s*$/i.exec(header);
    if (!m)
        return undefined;
    const decoded = Buffer.from(m[1], 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0)
        return undefined;
    return { email: decoded.slice(0, colon).trim().toLowerCase(), password: decoded.slice(colon + 1) };
}
export default fp(async (app) => {
    const key = randomBytes(32);
    const cache = new Map();
    async function authenticateBasic(header) {
        const creds = parseBasic(header);
        if (!creds)
            return undefined;
        const cacheKey = createHmac('sha256', key).update(`${creds.email}\0${creds.password}`).digest('base64');
        const hit = cache.get(cacheKey);
        if (hit && hit.expires > Date.now())
            return hit.account;
        const row = await app.prisma.account.findUnique({ where: { email: creds.email } });
        // verify against a dummy hash when the account is unknown, so timing does not reveal emails
        const ok = await verifyPassword(creds.password, row?.passwordHash ?? DUMMY_HASH);
        if (!row || !ok)
            return undefined;
        const account = { id: row.id, email: row.email, cloneNaming: row.cloneNaming };
        if (cache.size >= CACHE_MAX)
            cache.clear();
        cache.set(cacheKey, { account, expires: Date.now() + CACHE_TTL_MS });
        return account;
    }
    app.decorate('authenticateBasic', authenticateBasic);
    app.decorateRequest('account', null);
    app.addHook('onRequest', async (request) => {
        if (!request.url.startsWith('/api/'))
            return;
        if (request.routeOptions.config?.auth === false)
            return;
        if (request.is404)
            return;
        const account = await authenticateBasic(request.headers.authorization);
        if (!account)
            throw errors.unauthorized();
        request.account = account;
    });
}, { name: 'auth', dependencies: ['prisma'] });
// scrypt hash of a random password, used only to spend the same time on unknown accounts
const DUMMY_HASH = 'scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=';
//# sourceMappingURL=auth.js.map