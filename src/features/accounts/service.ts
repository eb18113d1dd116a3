// Accounts: the account commands' logic and the first-start bootstrap account.
import type { PrismaClient } from '../../db/client.ts'
import { generatePassword, hashPassword } from '../../domain/passwords.ts'
import { announceAccountChange, type AccountChanges } from '../../db/account-changes.ts'

const EMAIL = /^[^\s@]+@[^\s@]+$/

export class AccountError extends Error {
  override name = 'AccountError'
}

export async function addAccount (prisma: PrismaClient, email: string, password: string) {
  const normalized = email.trim().toLowerCase()
  if (!EMAIL.test(normalized)) throw new AccountError(`not an email address: ${email}`)
  if (password.length < 8) throw new AccountError('the password must have at least 8 characters')
  const existing = await prisma.account.findUnique({ where: { email: normalized } })
  if (existing) throw new AccountError(`an account for ${normalized} exists already`)
  return prisma.account.create({ data: { email: normalized, passwordHash: await hashPassword(password) } })
}

/** `changes`: the app whose credential cache must forget at once (other processes hear the NOTIFY). */
export async function setPassword (prisma: PrismaClient, email: string, password: string, changes?: AccountChanges) {
  if (password.length < 8) throw new AccountError('the password must have at least 8 characters')
  const account = await prisma.account.findUnique({ where: { email: email.trim().toLowerCase() } })
  if (!account) throw new AccountError(`no account for ${email}`)
  const updated = await prisma.account.update({ where: { id: account.id }, data: { passwordHash: await hashPassword(password) } })
  await announceAccountChange(prisma, account.id, changes)
  return updated
}

export async function removeAccount (prisma: PrismaClient, email: string, changes?: AccountChanges) {
  const account = await prisma.account.findUnique({ where: { email: email.trim().toLowerCase() } })
  if (!account) throw new AccountError(`no account for ${email}`)
  await prisma.$transaction(async tx => {
    await tx.account.delete({ where: { id: account.id } })
    // jobs have no foreign key to their account (prisma/schema.prisma): their rows go here, with
    // their log lines and resource links (those cascade from the jobs). After the account's rows:
    // a request that locked one of its drives or servers before the removal made the cascade wait
    // for its commit, and this statement's snapshot, taken after, sees the jobs it wrote
    await tx.$executeRaw`DELETE FROM jobs WHERE owner_id = ${account.id}::uuid`
  })
  await announceAccountChange(prisma, account.id, changes)
  return account
}

/** On a first start with no account at all, creates one and returns its password (printed once). */
export async function bootstrapAccount (prisma: PrismaClient): Promise<{ email: string, password: string } | undefined> {
  if (await prisma.account.count() > 0) return undefined
  const email = 'admin@clonejobs.local'
  const password = generatePassword()
  try {
    await prisma.account.create({ data: { email, passwordHash: await hashPassword(password) } })
  } catch {
    return undefined // another process created it first
  }
  return { email, password }
}
