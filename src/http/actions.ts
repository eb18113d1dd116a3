// The `?do=` action dispatcher behind POST /{resource}/{uuid}/action/. Each app gets its own
// registries (app.actions, made in app.ts); features add their actions when their plugin is
// registered, so two apps in one process share nothing and the dispatching routes never change.
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { TSchema } from 'typebox'
import { errors } from './errors.ts'

export interface ActionContext {
  app: FastifyInstance
  request: FastifyRequest
  reply: FastifyReply
  /** The caller's account id. */
  ownerId: string
  /** The object uuid from the URL (checked to be a uuid, not yet loaded). */
  uuid: string
  /** The body, validated against `body` when the action gives one (coerced, extra fields dropped). */
  body: unknown
  /** The query string (`do`, `avoid`, ...). */
  query: Record<string, unknown>
}

export interface Action {
  summary: string
  /** Schema of the body; validated with the app's ajv options. */
  body?: TSchema
  /** The body as the OpenAPI document shows it, when not `body` itself (e.g. the same schema with an `$id`, to name it). */
  documentedBody?: TSchema
  /**
   * Schema of the success answer. The OpenAPI document gives every action an operation of its
   * own with this result (http/action-docs.ts), so generated clients type each action's answer.
   */
  result?: TSchema
  /** Status of the success answer (default 202). */
  status?: number
  /** Does the action; the reply is 202 unless it sets another code; returns the body. */
  run: (ctx: ActionContext) => Promise<unknown>
}

declare module 'fastify' {
  interface FastifyInstance {
    /** This app's ?do= registries; features register into them from their plugins. */
    actions: { drive: ActionRegistry, server: ActionRegistry }
  }
}

export function actionRegistries (): { drive: ActionRegistry, server: ActionRegistry } {
  return { drive: new ActionRegistry('drive'), server: new ActionRegistry('server') }
}

export class ActionRegistry {
  private readonly actions = new Map<string, Action>()

  /** `resource` is the singular name: drive → POST /api/2.0/drives/{uuid}/action/. */
  constructor (readonly resource: string) {}

  register (name: string, action: Action): void {
    if (this.actions.has(name)) throw new Error(`${this.resource} action ${name} is registered already`)
    this.actions.set(name, action)
  }

  get (name: string): Action | undefined {
    return this.actions.get(name)
  }

  names (): string[] {
    return [...this.actions.keys()].sort()
  }

  /** The actions, sorted by name. */
  entries (): Array<[string, Action]> {
    return this.names().map(name => [name, this.actions.get(name) as Action])
  }

  /** Runs `?do=<name>` for the route's `:uuid`: unknown names are 400 at `do`, bad bodies 400. */
  async dispatch (app: FastifyInstance, request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    // the route's schema guarantees a uuid param and a `do` query parameter
    const { uuid } = request.params as { uuid: string }
    const query = request.query as { do: string } & Record<string, unknown>
    const name = query.do
    const action = this.actions.get(name)
    if (!action) throw errors.validation(`Unknown action ${JSON.stringify(name)}; one of: ${this.names().join(', ')}`, 'do')
    const body: unknown = request.body ?? {}
    if (action.body) {
      const validate = request.compileValidationSchema(action.body, 'body')
      if (!validate(body)) {
        const err: FastifyError = Object.assign(new Error('invalid body'), { code: 'FST_ERR_VALIDATION', validation: validate.errors ?? [], validationContext: 'body' as const })
        throw err
      }
    }
    reply.code(action.status ?? 202)
    return action.run({ app, request, reply, ownerId: request.account.id, uuid, body, query })
  }
}
