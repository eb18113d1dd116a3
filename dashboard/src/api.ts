// The API client, typed by the OpenAPI-generated paths. Credentials live in this module's memory
// only (never in web storage): a reload signs the user out.
import createClient, { type Middleware } from 'openapi-fetch'
import type { components, paths } from '../../openapi/client/schema.d.ts'

export type Job = components['schemas']['Job']
export type Drive = components['schemas']['Drive']
export type Server = components['schemas']['Server']
export type ApiErrorItem = components['schemas']['Error']
export type JobList = components['schemas']['JobList']

let authorization: string | undefined

export function setCredentials (email: string, password: string): void {
  // btoa needs Latin-1: encode the UTF-8 bytes of the pair first
  const bytes = new TextEncoder().encode(`${email}:${password}`)
  authorization = 'Basic ' + btoa(String.fromCharCode(...bytes))
}

export function clearCredentials (): void { authorization = undefined }

export function authHeaders (): Record<string, string> {
  return authorization ? { authorization } : {}
}

/** An error answered by the API, carrying its CloudSigma error array. */
export class ApiError extends Error {
  constructor (readonly status: number, readonly errors: ApiErrorItem[]) {
    super(errors.map(e => e.error_message).join('; ') || `HTTP ${status}`)
    this.name = 'ApiError'
  }
}

/** Turns any answer body into the error array it holds, or one made from the status. */
export function toErrors (status: number, body: unknown): ApiErrorItem[] {
  if (Array.isArray(body) && body.every(e => e && typeof e === 'object' && 'error_message' in e)) return body as ApiErrorItem[]
  return [{ error_type: 'http', error_message: `The service answered HTTP ${status}`, error_point: null }]
}

const auth: Middleware = {
  onRequest ({ request }) {
    if (authorization) request.headers.set('authorization', authorization)
    return request
  }
}

// credentials: 'omit' keeps the browser's own Basic-auth prompt away on a 401 (fetch spec: the
// prompt needs included credentials); our Authorization header is still sent
export const api = createClient<paths>({ baseUrl: location.origin, credentials: 'omit' })
api.use(auth)

/** Unwraps an openapi-fetch result: its data, or an ApiError with the API's error array. */
export async function ok<T> (call: Promise<{ data?: T, error?: unknown, response: Response }>): Promise<T> {
  let result
  try {
    result = await call
  } catch (err) {
    throw new ApiError(0, [{ error_type: 'network', error_message: `The service cannot be reached (${(err as Error).message})`, error_point: null }])
  }
  if (!result.response.ok) throw new ApiError(result.response.status, toErrors(result.response.status, result.error))
  return result.data as T
}

export function uuidOf (uri: string): string {
  return uri.split('/').filter(Boolean).at(-1) ?? uri
}
