// Test mode: every JSON response is validated against the schema its route declares for that
// status code, so the OpenAPI document cannot drift from what the service really answers.
// (Fastify's serializer alone would silently drop or coerce mismatching fields.)
import { Ajv, type ValidateFunction } from 'ajv'
import addFormats from 'ajv-formats'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'

export interface ResponseValidationOptions {
  /** Called with a description of each response that breaks its route's schema. */
  onViolation: (message: string) => void
}

export default fp<ResponseValidationOptions>(async (app, opts) => {
  // one validator per encapsulation context: route plugins add their own shared schemas
  const validators = new WeakMap<FastifyInstance, Ajv>()
  const compiled = new WeakMap<object, ValidateFunction>()

  const compile = (context: FastifyInstance, schema: object): { validate: ValidateFunction, ajv: Ajv } => {
    let ajv = validators.get(context)
    if (!ajv) {
      ajv = new Ajv({ strict: false, allErrors: true, validateFormats: true })
      addFormats.default(ajv)
      for (const s of Object.values(context.getSchemas())) ajv.addSchema(s as object)
      validators.set(context, ajv)
    }
    let validate = compiled.get(schema)
    if (!validate) {
      validate = ajv.compile(schema)
      compiled.set(schema, validate)
    }
    return { validate, ajv }
  }

  // a ?do= action's answer is checked against its own operation in the OpenAPI document
  // (http/action-docs.ts), not against the dispatching route's "any of them"
  let documentAjv: Ajv | undefined
  const actionSchema = (request: FastifyRequest, code: string): { validate: ValidateFunction, ajv: Ajv } | undefined => {
    const name = (request.query as { do?: unknown } | undefined)?.do
    const url = request.routeOptions.url ?? ''
    if (typeof name !== 'string' || !/\/action\/$/.test(url) || !app.swagger) return undefined
    const doc = app.swagger() as { paths: Record<string, { post?: { responses: Record<string, { content?: Record<string, { schema?: object }> }> } }> }
    const key = `${url.replace(/:(\w+)/g, '{$1}')}?do=${name}`
    if (!doc.paths[key]?.post?.responses[code]?.content?.['application/json']?.schema) return undefined
    if (!documentAjv) {
      documentAjv = new Ajv({ strict: false, allErrors: true, validateFormats: true, validateSchema: false })
      addFormats.default(documentAjv)
      documentAjv.addSchema({ ...doc, $id: 'openapi' })
    }
    const pointer = ['paths', key, 'post', 'responses', code, 'content', 'application/json', 'schema']
      .map(part => encodeURIComponent(part.replace(/~/g, '~0').replace(/\//g, '~1'))).join('/')
    const ref = `openapi#/${pointer}`
    const validate = documentAjv.getSchema(ref) ?? documentAjv.compile({ $ref: ref })
    return { validate, ajv: documentAjv }
  }

  app.addHook('preSerialization', async function (this: FastifyInstance, request, reply, payload) {
    const responses = request.routeOptions.schema?.response as Record<string, object> | undefined
    if (!responses) return payload
    const code = String(reply.statusCode)
    const action = actionSchema(request, code)
    if (action) {
      if (!action.validate(JSON.parse(JSON.stringify(payload)))) {
        opts.onViolation(`${request.method} ${request.routeOptions.url}?do=${String((request.query as { do: string }).do)} answered ${code}, which does not match its action's schema: ${action.ajv.errorsText(action.validate.errors)}`)
      }
      return payload
    }
    const schema = responses[code] ?? responses[`${code[0]}xx`] ?? responses.default
    const where = `${request.method} ${request.routeOptions.url} answered ${code}`
    if (!schema) {
      opts.onViolation(`${where}, which its schema does not declare`)
      return payload
    }
    const { validate, ajv } = compile(this, schema)
    // validate what the client would receive: JSON, without undefined values
    if (!validate(JSON.parse(JSON.stringify(payload)))) {
      opts.onViolation(`${where}, which does not match its schema: ${ajv.errorsText(validate.errors)}`)
    }
    return payload
  })
}, { name: 'response-validation' })
