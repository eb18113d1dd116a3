// resource_uri and reference objects (§1.12).
import { uri, type ResourceName } from '../domain/uris.ts'

export { API, uri, type ResourceName } from '../domain/uris.ts'

export interface Ref { resource_uri: string, uuid: string }

export function ref (resource: ResourceName, id: string): Ref {
  return { resource_uri: uri(resource, id), uuid: id }
}

/** CloudSigma timestamps: ISO 8601 with microseconds and `+00:00`. */
export function isoTime (d: Date | null | undefined): string | null {
  if (!d) return null
  const s = d.toISOString()
  // 'YYYY-MM-DDTHH:MM:SS.mmmZ' (24 characters for years 0-9999; no regex: lists format thousands)
  return s.length === 24 ? s.slice(0, 23) + '000+00:00' : s.replace(/\.(\d{3})Z$/, '.$1000+00:00')
}
