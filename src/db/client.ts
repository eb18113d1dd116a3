// The Prisma client on the pure-TypeScript engine with the pg driver adapter (no native engine).
import { PrismaPg } from '@prisma/adapter-pg'
import { PrismaClient } from './generated/client.ts'

import { Prisma } from './generated/client.ts'
export { Prisma }
export type { PrismaClient } from './generated/client.ts'
export type Tx = Prisma.TransactionClient

export function createPrisma (databaseUrl: string, opts: { max?: number } = {}): PrismaClient {
  const adapter = new PrismaPg({ connectionString: databaseUrl, max: opts.max ?? 10 })
  return new PrismaClient({ adapter })
}
