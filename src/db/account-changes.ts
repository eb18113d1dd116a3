// Announcements that an account's password changed or the account was removed, so credential
// caches drop it: at once in the announcing app (its own AccountChanges), and through NOTIFY in
// every process on the database (the CLI changes accounts from its own process).
import type { PrismaClient } from './client.ts'

/** PostgreSQL channel on which an account id is announced when its password changes or it is removed. */
export const ACCOUNTS_CHANNEL = 'clonejobs_accounts'

/**
 * One app's in-process announcements (account ids), made per app by plugins/auth.ts
 * (`app.accountChanges`): two apps in one process never hear each other's.
 */
export class AccountChanges {
  private readonly listeners = new Set<(accountId: string) => void>()

  /** Subscribes; returns the unsubscribe function. */
  on (listener: (accountId: string) => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  emit (accountId: string): void {
    for (const listener of this.listeners) listener(accountId)
  }
}

/** Announces a change: to `local` at once (the app that made it, if any), and by NOTIFY to every process. */
export async function announceAccountChange (prisma: PrismaClient, id: string, local?: AccountChanges): Promise<void> {
  local?.emit(id)
  await prisma.$executeRaw`SELECT pg_notify(${ACCOUNTS_CHANNEL}, ${id})`
}
