// resource_uri of an object (§1.12): the engine stores them on jobs, the API answers with them.
export const API = '/api/2.0'

export type ResourceName = 'drives' | 'servers' | 'jobs' | 'tags' | 'user' | 'libdrives'

export function uri (resource: ResourceName, id: string): string {
  return `${API}/${resource}/${id}/`
}
