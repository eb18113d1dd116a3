// The Prisma client on the pure-TypeScript engine with the pg driver adapter (no native engine).
import { PrismaPg } from '@prisma/adapter-pg';
import { PrismaClient } from "./generated/client.js";
import { Prisma } from "./generated/client.js";
export { Prisma };
export function createPrisma(databaseUrl, opts = {}) {
    const adapter = new PrismaPg({ connectionString: databaseUrl, max: opts.max ?? 10 });
    return new PrismaClient({ adapter });
}
//# sourceMappingURL=client.js.map