// The database: one Prisma client (pg driver adapter) per app, released on close.
import fp from 'fastify-plugin';
import { createPrisma } from "../db/client.js";
export default fp(async (app, opts) => {
    const prisma = createPrisma(opts.databaseUrl);
    await prisma.$connect();
    app.decorate('prisma', prisma);
    app.addHook('onClose', async () => { await prisma.$disconnect(); });
}, { name: 'prisma' });
//# sourceMappingURL=prisma.js.map