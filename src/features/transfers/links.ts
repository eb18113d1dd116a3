// Transfer links: random tokens (only their hash is stored) for chunk uploads and one-time downloads.
import { createHash, randomBytes } from 'node:crypto'
import type { TransferLink } from '../../db/generated/client.ts'
import { errors } from '../../http/errors.ts'
import { API } from '../../http/uris.ts'
import type { PrismaClient, Tx } from '../../db/client.ts'

type Db = PrismaClient | Tx

// ---------------------------------------------------------------------------------------------
// Tokens and links

export type LinkPurpose = 'upload_chunk' | 'download'

const TOKEN_RE = /^[A-Za-z0-9_-]{43}$/

/** 32 random bytes, base64url: the link carries the token, the database only its sha256. */
export function newToken (): { token: string, hash: string } {
  const token = randomBytes(32).toString('base64url')
  return { token, hash: hashToken(token) }
}

export function hashToken (token: string): string {
  return createHash('sha256').update(token).digest('hex')
}

export function chunkLinkPath (token: string): string {
  return `${API}/uploads/${token}/`
}

export function downloadLinkPath (token: string): string {
  return `${API}/downloads/${token}/`
}

/** Whether `token` has the form of a token (anything else is not looked up). */
export function isToken (token: string): boolean {
  return TOKEN_RE.test(token)
}

/** The link of a token; unknown → 404, expired → 410. */
export async function findLink (db: Db, token: string, purpose: LinkPurpose): Promise<TransferLink> {
  const link = isToken(token) ? await db.transferLink.findUnique({ where: { tokenHash: hashToken(token) } }) : null
  return checkLink(link ?? undefined, purpose)
}

/** A link row as found for a token: 404 when there is none or it is for another purpose, 410 when expired. */
export function checkLink<L extends { purpose: string, expiresAt: Date }> (link: L | undefined, purpose: LinkPurpose): L {
  if (!link || link.purpose !== purpose) throw errors.notFound('Link', 'token')
  if (link.expiresAt.getTime() <= Date.now()) throw errors.gone('This link has expired; ask for a new one')
  return link
}
