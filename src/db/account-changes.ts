// Announcements that an account's password changed or the account was removed, so credential
// caches drop it: at once inside this process, and through NOTIFY in every other one (the CLI
// changes accounts from its own process).
import { EventEmitter } from 'node:events'
import type { PrismaClient } from './client.ts'

/** PostgreSQL channel on which an account id is announced when its password changes or it is removed. */
export const ACCOUNTS_CHANNEL = 'clonejobs_accounts'

/** The same announcement inside this process, at once ('changed', accountId). */
export const accountChanges = new EventEmitter()

export async function announceAccountChange (prisma: PrismaClient, id: string): Promise<void> {
  accountChanges.emit('changed', id)
  await prisma.$executeRaw`SELECT pg_notify(${ACCOUNTS_CHANNEL}, ${id})`
}
