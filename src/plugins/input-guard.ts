// Refuses, before any route runs, request text the database cannot hold: NUL bytes and lone
// UTF-16 surrogates in path parameters, query parameters (names and values) and JSON bodies; and,
// once validated, numbers the validator made of text that is not a decimal number.
import type { FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { assertDecimalNumbers, assertStorable, looseNumberPaths } from '../http/text.ts'

export default fp(async (app) => {
  app.addHook('preValidation', async (request: FastifyRequest) => {
    // probes and docs read no input; only the API's routes store what they are sent
    if (!request.routeOptions.url?.startsWith('/api/')) return
    assertStorable(request.params, 'A path parameter')
    assertStorable(request.query, 'A query parameter')
    assertStorable(request.body, 'The request body')
    // numeric strings are taken for numbers (coerceTypes, §1.15), but Ajv's coercion also takes
    // "0x10", " ", "Infinity", "1e400" and true: the values the validator may turn into
    // numbers are noted here, and refused after it if it did
    request.looseNumbers = { query: looseNumberPaths(request.query), body: looseNumberPaths(request.body) }
  })
  app.addHook('preHandler', async (request: FastifyRequest) => {
    const loose = request.looseNumbers
    if (loose === undefined) return
    assertDecimalNumbers(request.query, loose.query, 'A query parameter')
    assertDecimalNumbers(request.body, loose.body, 'The request body')
  })
}, { name: 'input-guard' })
