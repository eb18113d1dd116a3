// Refuses, before any route runs, request text the database cannot hold: NUL bytes and lone
// UTF-16 surrogates in path parameters, query parameters (names and values) and JSON bodies.
import type { FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { assertStorable } from '../http/text.ts'

export default fp(async (app) => {
  app.addHook('preValidation', async (request: FastifyRequest) => {
    // probes and docs read no input; only the API's routes store what they are sent
    if (!request.routeOptions.url?.startsWith('/api/')) return
    assertStorable(request.params, 'A path parameter')
    assertStorable(request.query, 'A query parameter')
    assertStorable(request.body, 'The request body')
  })
}, { name: 'input-guard' })
