// The database: one Prisma client (pg driver adapter) per app, released on close.
import fp from 'fastify-plugin'
import { createPrisma, type PrismaClient } from '../db/client.ts'

declare module 'fastify' {
  interface FastifyInstance {
    prisma: PrismaClient
  }
}

export default fp<{ databaseUrl: string }>(async (app, opts) => {
  const prisma = createPrisma(opts.databaseUrl)
  await prisma.$connect()
  app.decorate('prisma', prisma)
  app.addHook('onClose', async () => { await prisma.$disconnect() })
}, { name: 'prisma' })
