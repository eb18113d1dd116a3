// The database: one pg pool per app, shared by the Prisma client (pg driver adapter) and the
// typed raw SQL of the hot read paths, released on close.
import fp from 'fastify-plugin'
import { PrismaPg } from '@prisma/adapter-pg'
import pg from 'pg'
import { PrismaClient } from '../db/generated/client.ts'

declare module 'fastify' {
  interface FastifyInstance {
    prisma: PrismaClient
    /** The same connections as prisma: hot reads skip Prisma's query compiler (issue 18). */
    pg: pg.Pool
  }
}

export default fp<{ databaseUrl: string }>(async (app, opts) => {
  const pool = new pg.Pool({ connectionString: opts.databaseUrl, max: 10 })
  const prisma = new PrismaClient({ adapter: new PrismaPg(pool) })
  await prisma.$connect()
  app.decorate('prisma', prisma)
  app.decorate('pg', pool)
  app.addHook('onClose', async () => {
    await prisma.$disconnect()
    if (!pool.ended) await pool.end()
  })
}, { name: 'prisma' })
