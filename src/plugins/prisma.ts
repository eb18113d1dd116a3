// The database: one Prisma client (pg driver adapter) per app, released on close.
import type pg from 'pg'
import fp from 'fastify-plugin'
import { createDatabase, type PrismaClient } from '../db/client.ts'

declare module 'fastify' {
  interface FastifyInstance {
    prisma: PrismaClient
    /** The pg pool under `prisma` (waiting count for load shedding). */
    dbPool: pg.Pool
  }
}

export default fp<{ databaseUrl: string }>(async (app, opts) => {
  const { prisma, pool, close } = createDatabase(opts.databaseUrl, {
    max: app.config.dbPoolMax,
    waitMs: app.config.dbPoolWaitMs,
    queryTimeoutMs: app.config.dbQueryTimeoutMs
  })
  await prisma.$connect()
  app.decorate('prisma', prisma)
  app.decorate('dbPool', pool)
  app.addHook('onClose', close)
}, { name: 'prisma' })
