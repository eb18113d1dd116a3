// gzip for answers when the request has `Accept-Encoding: gzip` (spec §1.3), by @fastify/compress.
// What is compressed: JSON (the API's answers and errors) and text (job logs, /metrics, the
// dashboard's pages and assets), from 1 KiB up. Never image bytes (`application/octet-stream`,
// which the plugin's own default list would compress: a download keeps its Content-Length and
// Range answers stay byte offsets of the image), nor server-sent events, whose frames must leave as
// they happen (their route and a followed job log write to the socket themselves: no compression
// hook sees them). Request bodies are taken as sent: no Content-Encoding is undone.
import compress from '@fastify/compress'
import fp from 'fastify-plugin'

/** The media types answered compressed (with mime-db's compressible types: html, javascript, css, svg). */
export const COMPRESSIBLE = /^text\/(?!event-stream)|^application\/(?:[\w.-]+\+)?json(?:\s*;|$)/i

export default fp(async (app) => {
  await app.register(compress, {
    global: true,
    // uploads stream their bodies to storage, counted against Content-Length: never inflated here
    globalDecompression: false,
    // the encoding the spec names; clients that can read no other ask for it
    encodings: ['gzip'],
    threshold: 1024,
    customTypes: (type: string) => COMPRESSIBLE.test(type)
  })
}, { name: 'compression' })
