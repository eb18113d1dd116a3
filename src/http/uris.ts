// resource_uri and reference objects (§1.12).
export const API = '/api/2.0'

export type ResourceName = 'drives' | 'servers' | 'jobs' | 'tags' | 'user' | 'libdrives'

export function uri (resource: ResourceName, id: string): string {
  return `${API}/${resource}/${id}/`
}

export interface Ref { resource_uri: string, uuid: string }

export function ref (resource: ResourceName, id: string): Ref {
  return { resource_uri: uri(resource, id), uuid: id }
}

/** CloudSigma timestamps: ISO 8601 with microseconds and `+00:00`. */
export function isoTime (d: Date | null | undefined): string | null {
  if (!d) return null
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000+00:00')
}
