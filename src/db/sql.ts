// One constant statement on either connection kind: Prisma (its client or an interactive
// transaction) or the pg pool under it (the pool, or a client of it). Hot paths send their
// constant texts this way, as named statements on pg; every value is bound as $n.
import type pg from 'pg'
import type { PrismaClient, Tx } from './client.ts'

/**
 * Where a constant statement runs: a plain `pg` pool or client where one is at hand (Prisma's
 * raw-query path costs more CPU than the hot statements themselves), else Prisma.
 */
export type Sql = PrismaClient | Tx | pg.Pool | pg.PoolClient | pg.Client
/** A transaction's connection: Prisma's interactive transaction, or a pg pool client between BEGIN and COMMIT (pg-transaction.ts). */
export type InTx = Tx | pg.PoolClient

/**
 * Runs a constant statement (`sql` never holds a value: all are bound as $n); on pg, with `name`,
 * it is a named (prepared) statement, parsed and planned once per connection.
 */
export async function query<T> (db: Sql, sql: string, params: unknown[], name?: string): Promise<T[]> {
  // Unsafe only in name: one constant text serves both the pg pool and Prisma, which a tagged template cannot; values are bound
  if ('$queryRawUnsafe' in db) return db.$queryRawUnsafe<T[]>(sql, ...params)
  return (await db.query(name ? { name, text: sql, values: params } : { text: sql, values: params })).rows as T[]
}
