// `avoid=<uuid>[,<uuid>...]` (spec §2.11), the advisory placement hint of drive create, drive and
// server clone, server start and uploads: one parser for all of them.
import { domainErrors } from './errors.ts'

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/**
 * `avoid`, given once or repeated: lowercase uuids in priority order, duplicates dropped. Anything
 * that is not a uuid is a validation error at `avoid`; unknown uuids are the caller's to ignore
 * (avoid is advisory).
 */
export function parseAvoid (raw: unknown): string[] {
  if (raw === undefined || raw === null) return []
  const parts = (Array.isArray(raw) ? raw : [raw]).flatMap(v => String(v).split(',')).map(s => s.trim())
  const out: string[] = []
  for (const p of parts) {
    if (p === '') continue
    if (!UUID_RE.test(p)) throw domainErrors.validation(`avoid must be a comma-separated list of uuids, got ${JSON.stringify(p.slice(0, 80))}`, 'avoid')
    const id = p.toLowerCase()
    if (!out.includes(id)) out.push(id)
  }
  return out
}
