// The OpenAPI document, generated from the route schemas; shared schemas become named components.
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import fp from 'fastify-plugin'
import { documentActions } from '../http/action-docs.ts'

/** A stable operationId from method and path, for routes that do not name one (SDK method names). */
export function operationIdFor (method: string, url: string): string {
  const words = url.replace(/^\/api\/2\.0\//, '/').split('/').filter(Boolean).map(part => {
    const param = /^[:{](\w+)}?$/.exec(part)
    const word = (param ? 'by-' + param[1] : part).replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ?? '').toUpperCase())
    return word.charAt(0).toUpperCase() + word.slice(1)
  })
  return method.toLowerCase() + words.join('')
}

export default fp(async (app) => {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'clonejobs',
        version: '0.1.0',
        description: 'Drives, servers and the jobs that clone them; wire-compatible with the CloudSigma API 2.0 for that subset.'
      },
      servers: [{ url: '/' }],
      components: {
        securitySchemes: { basicAuth: { type: 'http', scheme: 'basic' } }
      },
      security: [{ basicAuth: [] }],
      tags: [
        { name: 'drives', description: 'Block-device images on real storage' },
        { name: 'servers', description: 'Server definitions with drive mounts' },
        { name: 'jobs', description: 'Long-running operations' },
        { name: 'transfers', description: 'Uploads and downloads of drive images' },
        { name: 'accounts', description: 'Account settings and websocket authentication' },
        { name: 'health', description: 'Probes' }
      ]
    },
    transform: ({ schema, url, route }) => {
      const method = Array.isArray(route.method) ? route.method[0] : route.method
      const named = schema && !('operationId' in schema) ? { ...schema, operationId: operationIdFor(String(method), url) } : schema
      return { schema: named, url }
    },
    // each ?do= action gets its own operation (app.actions is filled by the features, read when the document is built)
    transformObject: (document) => 'openapiObject' in document ? documentActions(document.openapiObject, app.hasDecorator('actions') ? [app.actions.drive, app.actions.server] : []) : document.swaggerObject,
    // components are named after each shared schema's $id
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => String(json.$id ?? `def-${i}`) }
  })
  // the docs page: Swagger UI rendering the document above, at /docs (the JSON at /docs/json)
  await app.register(swaggerUi, { routePrefix: '/docs', uiConfig: { docExpansion: 'list', deepLinking: true } })
}, { name: 'swagger' })
