// The registry behind POST /drives/{uuid}/action/?do=<name>. Each action registers itself once,
// at the top level of its module (resize in routes/drives.ts; clone, upload_chunk, download in
// theirs), so the dispatcher never needs editing:
//
//   registerDriveAction('clone', { summary: 'Clone the drive', body: refTo(DriveCloneInput), run: async (ctx) => ... })
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { TSchema } from 'typebox'

export interface DriveActionContext {
  app: FastifyInstance
  request: FastifyRequest
  reply: FastifyReply
  /** The caller's account id. */
  ownerId: string
  /** The drive uuid from the URL (checked to be a uuid, not yet loaded). */
  uuid: string
  /** The body, validated against `body` when the action gives one (coerced, extra fields dropped). */
  body: unknown
  /** The query string (`do`, `avoid`, ...). */
  query: Record<string, unknown>
}

export interface DriveAction {
  summary: string
  /** Schema of the body, e.g. refTo(DriveResizeInput); validated with the app's ajv options. */
  body?: TSchema
  /** Does the action; sets the status code on `reply` (202 unless it does) and returns the body. */
  run: (ctx: DriveActionContext) => Promise<unknown>
}

const actions = new Map<string, DriveAction>()

export function registerDriveAction (name: string, action: DriveAction): void {
  if (actions.has(name)) throw new Error(`drive action ${name} is registered already`)
  actions.set(name, action)
}

export function driveAction (name: string): DriveAction | undefined {
  return actions.get(name)
}

export function driveActionNames (): string[] {
  return [...actions.keys()].sort()
}
