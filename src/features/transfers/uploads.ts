// Uploads of drive images (spec §5.1–§5.2, decisions.md "Uploads and downloads"):
//   POST|PUT /drives/upload/[name]   raw body, Content-Length = drive size → 201 text/plain <uuid>
//   POST /initupload/                → 201 {"objects": [drive]} in `uploading`
//   POST /drives/{uuid}/action/?do=upload_chunk → 200 {"link"} (416 when the chunk is stored)
//   POST|PUT /uploads/{token}/       the chunk bytes (no auth: the token is the credential)
//   POST /_upload/                   multipart: `data` JSON field, then one `file` field → {"job_id"}
//   GET|POST /drives/{uuid}/upload/  resumable.js (§5.3): ?resumableChunkNumber=…; 200 stored, 404 not
// Raw bodies are streams here: no body limit but the drive maximum, checked before any byte is stored.
import type { Readable } from 'node:stream'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import multipart from '@fastify/multipart'
import { Type } from 'typebox'
import { ApiError, errors } from '../../http/errors.ts'
import { createBodyHook, requireRelatedUuid } from '../../http/bodies.ts'
import { multipartFailure } from '../../http/multipart.ts'
import { assertStorable } from '../../http/text.ts'
import { uri } from '../../http/uris.ts'
import { NAME_MAX_LENGTH, UuidParams, errorResponses, refTo } from '../../http/schemas.ts'
import { driveSchemas, DriveObjects } from '../drives/schemas.ts'
import {
  ChunkLink, ChunkReceived, InitUploadBody, RawBytes, UploadChunkBody, UploadChunkInput, UploadJob,
  transferSchemas, type MultipartUploadDataT, type UploadChunkInputT
} from './schemas.ts'
import { parseAvoid } from '../../domain/avoid.ts'
import type { Action } from '../../http/actions.ts'
import { chunkLink, initUpload, receiveChunk, ChunksInFlight } from './upload-chunked.ts'
import { receiveRawUpload } from './upload-raw.ts'
import { startMultipartUpload, type MultipartUpload } from './upload-multipart.ts'
import { startMultipartUploadInto } from './upload-into.ts'
import { RESUMABLE_STRINGS, receiveResumableChunk, resumableChunkOf, resumableChunkStatus, type ResumableResult } from './upload-resumable.ts'
import { transferDeps, uploadMax } from './service.ts'
import { markSocketReads } from './streams.ts'
import { SessionLocks } from '../../db/session-locks.ts'

const TAGS = ['transfers']

// ?do=upload_chunk; registered into each app's drive actions by the plugin below
const uploadChunk: Action = {
  summary: 'A link for one chunk of a chunked upload (§5.2): 202 {"link"}; 416 when the chunk is already uploaded',
  body: UploadChunkBody,
  documentedBody: UploadChunkInput,
  result: refTo(ChunkLink),
  run: async ({ app, reply, ownerId, uuid, body }) => {
    const { chunk_number: n, chunk_size: s } = body as UploadChunkInputT
    reply.code(202)
    return chunkLink(transferDeps(app), ownerId, uuid, n, s)
  }
}

function contentLength (raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined
  if (!/^\d+$/.test(raw.trim())) throw errors.validation('Content-Length must be a number of bytes', 'Content-Length')
  return Number(raw)
}

// the body is left unread: close the connection after answering rather than drain it
const lengthRequired = () => new ApiError(411, 'validation', 'Content-Length is required: it sets the size of the drive', 'Content-Length', { connection: 'close' })

const MEDIA = Type.Optional(Type.Union([Type.Literal('disk'), Type.Literal('cdrom')], { description: 'Media of the new drive (default disk)' }))

const uploads: FastifyPluginAsyncTypebox = async (app) => {
  for (const s of [...transferSchemas, ...driveSchemas]) app.addSchema(s)
  app.actions.drive.register('upload_chunk', uploadChunk)
  const deps = transferDeps(app)
  // this app's chunks being received (never shared with another app in the process)
  // its claims on chunks across processes: one dedicated connection (session-level advisory locks)
  const chunksInFlight = new ChunksInFlight(new SessionLocks({
    connectionString: app.dbPool.options.connectionString,
    connectionTimeoutMillis: app.config.dbPoolWaitMs,
    query_timeout: app.config.dbQueryTimeoutMs,
    application_name: 'clonejobs chunk claims'
  }, {
    onLost: (err, lost) => { app.log.warn({ err, lost }, 'the chunk claims connection failed: the chunks being received were aborted') }
  }))
  // the running hashes of uploads in progress live on the process's hash worker: forget them
  app.addHook('onClose', async () => { await chunksInFlight.close() })

  // raw bodies stay streams (this scope only); their size is checked against the drive maximum
  app.addContentTypeParser('application/octet-stream', (_request, payload, done) => { done(null, payload) })
  await app.register(multipart, {
    limits: { fileSize: uploadMax(deps), files: 2, fields: 4, parts: 6, fieldSize: 64 * 1024, headerPairs: 100 }
  })

  const rawUpload = {
    config: { produces: ['text/plain'] },
    schema: {
      tags: TAGS,
      summary: 'Upload a raw image into a new drive (§5.1); curl -T sends PUT, --data-binary POST',
      description: 'Content-Length is required and becomes the drive size (at most the drive maximum, checked before any byte is stored). ' +
        'The drive is `uploading` until the last byte is stored, then `unmounted`. A short body or a broken connection removes the drive. ' +
        'Answers 201 with the drive uuid as text/plain (no newline) and a Location header; the drive_upload job records {sha256, bytes}.',
      consumes: ['application/octet-stream'],
      params: Type.Object({ name: Type.Optional(Type.String({ maxLength: NAME_MAX_LENGTH, description: 'Name of the new drive (default: "upload")' })) }),
      querystring: Type.Object({ media: MEDIA }, { additionalProperties: true }),
      body: RawBytes,
      response: {
        201: Type.String({ description: 'The uuid of the new drive (text/plain)' }),
        ...errorResponses(411, 413, 415)
      }
    }
  }
  const rawHandler = async (request: FastifyRequest<{ Params: { name?: string }, Querystring: { media?: 'disk' | 'cdrom' } }>, reply: FastifyReply) => {
    const size = contentLength(request.headers['content-length'])
    if (size === undefined) throw lengthRequired()
    const body = request.body as Readable | undefined
    if (size > 0 && typeof body?.pipe !== 'function') throw errors.unsupportedMediaType(String(request.headers['content-type'] ?? 'none'))
    const name = request.params.name || 'upload'
    const result = await receiveRawUpload(deps, request.account.id, { name, media: request.query.media ?? 'disk' }, size, body as Readable)
    return reply.code(201).type('text/plain; charset=utf-8').header('location', uri('drives', result.driveId)).send(result.driveId)
  }
  // the bare path has no `name` parameter; the OpenAPI document must not claim one
  const { params: _nameParam, ...bareSchema } = rawUpload.schema
  const bareUpload = { ...rawUpload, schema: bareSchema }
  for (const [url, options] of [['/drives/upload/', bareUpload], ['/drives/upload/:name', rawUpload]] as const) {
    app.post(url, options, rawHandler)
    app.put(url, options, rawHandler)
  }

  app.post('/initupload/', {
    preValidation: createBodyHook,
    schema: {
      tags: TAGS,
      summary: 'Start a chunked upload (§5.2): a drive of exactly `size` bytes in status uploading',
      description: 'Then ask POST /drives/{uuid}/action/?do=upload_chunk for a link per chunk and POST the bytes to it. ' +
        'The drive_upload job stays started, with byte progress, until every chunk is in; the drive then becomes unmounted.',
      querystring: Type.Object({ avoid: Type.Optional(Type.String()) }, { additionalProperties: true }),
      body: refTo(InitUploadBody),
      response: { 201: refTo(DriveObjects), ...errorResponses(413) }
    }
  }, async (request, reply) => {
    parseAvoid(request.query.avoid)
    const input = request.body.objects[0]
    const drive = await initUpload(deps, request.account.id, {
      name: input.name,
      size: input.size,
      media: input.media ?? 'disk',
      storageType: input.storage_type,
      affinities: input.affinities,
      meta: input.meta
    })
    return reply.code(201).send({ objects: [drive] } as never)
  })

  const chunkRoute = {
    config: { auth: false },
    schema: {
      tags: TAGS,
      summary: 'Upload one chunk to its link (§5.2); no authentication, the token is the credential',
      description: 'The body must hold exactly the chunk\'s bytes (400 otherwise, and nothing is recorded). 416 when the chunk is stored already, ' +
        '410 when the link has expired or the upload is over, 404 for an unknown link.',
      consumes: ['application/octet-stream'],
      security: [],
      params: Type.Object({ token: Type.String() }),
      body: RawBytes,
      response: { 200: refTo(ChunkReceived), ...errorResponses(404, 410, 413, 416) }
    }
  }
  const chunkHandler = async (request: FastifyRequest<{ Params: { token: string } }>) => {
    const body = request.body as Readable | undefined
    if (typeof body?.pipe !== 'function') throw errors.unsupportedMediaType(String(request.headers['content-type'] ?? 'none'))
    const r = await receiveChunk(deps, chunksInFlight, request.params.token, body, contentLength(request.headers['content-length']))
    return { chunk: r.chunk, bytes: r.bytes, chunks_stored: r.chunksStored, chunks_total: r.chunksTotal, complete: r.complete }
  }
  app.post('/uploads/:token/', chunkRoute, chunkHandler)
  app.put('/uploads/:token/', chunkRoute, chunkHandler)

  resumableRoutes(app, deps, chunksInFlight)

  app.post('/_upload/', {
    schema: {
      tags: TAGS,
      summary: 'Multipart upload in the style of TrueNAS /_upload: a `data` JSON field first, then one `file` field',
      description: '`data` is {"method": "drives.upload", "params": [{"name", "media"?}]} for a new drive, or [{"uuid"}] to replace the data of an existing, ' +
        'idle drive (the file must be exactly its size; its image is replaced only once the whole file is in). The file is streamed into the drive, which is ' +
        '`uploading` meanwhile. Answers 200 {"job_id"} once the file is stored; the job result holds {sha256, bytes}. ' +
        'A malformed form (no data, data not JSON, file before data, two files) is 400 and leaves nothing behind.',
      consumes: ['multipart/form-data'],
      response: { 200: refTo(UploadJob), ...errorResponses(404, 413, 503) }
    }
  }, async (request) => {
    if (!request.isMultipart()) throw errors.validation('The request must be multipart/form-data', 'Content-Type')
    let data: MultipartUploadDataT | undefined
    let upload: MultipartUpload | undefined
    // receive discards the upload itself when it fails: the catch below must not do it again
    let receiving = false
    const hint = contentLength(request.headers['content-length'])
    try {
      for await (const part of request.parts()) {
        if (part.type === 'field') {
          if (upload) throw errors.validation('No field may follow the file', part.fieldname)
          if (part.fieldname !== 'data' || data) throw errors.validation(`Unexpected field ${JSON.stringify(part.fieldname)}: send one data field, then the file`, part.fieldname)
          data = parseData(part.value)
          continue
        }
        if (!data) { part.file.resume(); throw errors.validation('The data field must come before the file', 'data') }
        if (part.fieldname !== 'file') { part.file.resume(); throw errors.validation(`The file field must be named file, not ${JSON.stringify(part.fieldname)}`, part.fieldname) }
        if (upload) { part.file.resume(); throw errors.validation('Send exactly one file', 'file') }
        const p = data.params[0]
        upload = p.uuid !== undefined
          ? await startMultipartUploadInto(deps, request.account.id, requireRelatedUuid(p.uuid, 'uuid', 'drives'))
          : await startMultipartUpload(deps, request.account.id, { name: p.name ?? 'upload', media: p.media ?? 'disk' }, hint)
        receiving = true
        markSocketReads(part.file, request.raw)
        await upload.receive(part.file, () => part.file.truncated)
        receiving = false
      }
    } catch (err) {
      if (upload && !receiving) throw await upload.abort(err)
      throw multipartFailure(err)
    }
    if (!data) throw errors.validation('The data field is missing', 'data')
    if (!upload) throw errors.validation('The file field is missing', 'file')
    const result = await upload.commit()
    return { job_id: result.jobId }
  })
}

// resumable.js sends every parameter in the query string (and, in multipart mode, as form fields too)
function resumableQuery (required: boolean) {
  const n = (description: string) => Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description })
  const numbers = {
    resumableChunkNumber: n('The chunk, from 1'),
    resumableChunkSize: n('Nominal chunk size S (fixed by the first chunk POSTed); there are max(1, floor(total / S)) chunks and the last one takes the remainder'),
    resumableTotalSize: n('The file size: must be the drive\'s size (from /initupload/)')
  }
  const optional = {
    resumableCurrentChunkSize: Type.Optional(n('This chunk\'s length; checked when sent')),
    resumableTotalChunks: Type.Optional(n('Number of chunks; checked when sent')),
    ...Object.fromEntries(RESUMABLE_STRINGS.map(k => [k, Type.Optional(Type.String({ description: 'Accepted and ignored' }))]))
  }
  return Type.Object({
    ...(required ? numbers : Object.fromEntries(Object.entries(numbers).map(([k, v]) => [k, Type.Optional(v)]))),
    ...optional
  }, { additionalProperties: true })
}

function resumableAnswer (r: ResumableResult) {
  return { chunk: r.chunk, bytes: r.bytes, chunks_stored: r.chunksStored, chunks_total: r.chunksTotal, complete: r.complete }
}

/** GET and POST /drives/{uuid}/upload/: the resumable.js protocol (upload-resumable.ts). */
function resumableRoutes (app: Parameters<FastifyPluginAsyncTypebox>[0], deps: ReturnType<typeof transferDeps>, chunksInFlight: ChunksInFlight): void {
  const rules = 'The drive must be `uploading` (made by POST /initupload/ with the file\'s exact size; 400 otherwise). ' +
    'Chunks count from 1; with nominal size S there are max(1, floor(size / S)) and the last one takes the remainder (resumable.js with forceChunkSize=false). ' +
    'A number out of range, a total that is not the drive\'s size, a current chunk size or a body of the wrong length, or another S than the first chunk\'s: 400 (resumable.js stops on 400). ' +
    'Another account\'s drive: 404.'
  app.get('/drives/:uuid/upload/', {
    schema: {
      tags: TAGS,
      summary: 'resumable.js test request (§5.3): 200 when the chunk is stored, 404 when it is not',
      description: rules,
      params: UuidParams,
      querystring: resumableQuery(true),
      response: { 200: refTo(ChunkReceived), ...errorResponses(404) }
    }
  }, async (request) => {
    return resumableAnswer(await resumableChunkStatus(deps, request.account.id, request.params.uuid, resumableChunkOf(request.query)))
  })

  app.post('/drives/:uuid/upload/', {
    schema: {
      tags: TAGS,
      summary: 'resumable.js chunk upload (§5.3): stores one chunk; 200, also when it was stored already',
      description: rules + ' The body is multipart/form-data (resumable.js\'s default: the resumable* fields, then the chunk as the `file` part) or, ' +
        'with resumable.js\'s method "octet", the raw chunk as application/octet-stream with the fields in the query string. ' +
        'Chunks may arrive in any order and in parallel; a chunk sent twice is stored once. When the last chunk is in, the drive_upload job of the upload ' +
        'verifies the image and the drive becomes `unmounted` (`complete: true` in the answer).',
      consumes: ['multipart/form-data', 'application/octet-stream'],
      params: UuidParams,
      querystring: resumableQuery(false),
      body: Type.Unsafe<unknown>({ description: 'multipart/form-data with the resumable* fields and a `file` part, or the raw chunk (application/octet-stream)' }),
      response: { 200: refTo(ChunkReceived), ...errorResponses(404, 413, 415) }
    }
  }, async (request) => {
    const ownerId = request.account.id
    const uuid = request.params.uuid
    const query = request.query as Record<string, unknown>
    if (!request.isMultipart()) {
      const body = request.body as Readable | undefined
      if (typeof body?.pipe !== 'function') throw errors.unsupportedMediaType(String(request.headers['content-type'] ?? 'none'))
      let c
      try {
        c = resumableChunkOf(query)
      } catch (err) {
        body.resume()
        throw err
      }
      return resumableAnswer(await receiveResumableChunk(deps, chunksInFlight, ownerId, uuid, c, body))
    }
    const fields: Record<string, unknown> = {}
    // the chunk is stored while the rest of the form is read, and recorded only once the form has
    // ended with no second file: a refused form leaves the upload as it was
    let receiving: Promise<ResumableResult> | undefined
    let formEnd!: { resolve: () => void, reject: (err: unknown) => void }
    const formEnded = new Promise<void>((resolve, reject) => { formEnd = { resolve, reject } })
    formEnded.catch(() => {})
    try {
      for await (const part of request.parts({ limits: { fileSize: uploadMax(deps), files: 2, fields: 32, parts: 34, fieldSize: 64 * 1024 } })) {
        if (part.type === 'field') {
          if (!receiving) fields[part.fieldname] = part.value
          continue
        }
        if (receiving) { part.file.resume(); throw errors.validation('Send exactly one file', 'file') }
        if (part.fieldname !== 'file') { part.file.resume(); throw errors.validation(`The chunk must be the form field named file, not ${JSON.stringify(part.fieldname)}`, part.fieldname) }
        let c
        try {
          c = resumableChunkOf(query, fields)
        } catch (err) {
          part.file.resume()
          throw err
        }
        markSocketReads(part.file, request.raw)
        receiving = receiveResumableChunk(deps, chunksInFlight, ownerId, uuid, c, part.file, () => part.file.truncated, () => formEnded)
        receiving.catch(() => {}) // awaited below
      }
      formEnd.resolve()
      if (!receiving) throw errors.validation('The file field (the chunk) is missing', 'file')
      return resumableAnswer(await receiving)
    } catch (err) {
      formEnd.reject(err)
      // the chunk's request settles (its bytes unrecorded) before the form's error is answered
      await receiving?.catch(() => {})
      throw multipartFailure(err)
    }
  })
}

function parseData (value: unknown): MultipartUploadDataT {
  let parsed: unknown
  try {
    parsed = JSON.parse(String(value))
  } catch {
    throw errors.validation('The data field must be JSON', 'data')
  }
  assertStorable(parsed, 'The data field')
  const o = parsed as Partial<MultipartUploadDataT> | null
  if (!o || typeof o !== 'object' || o.method !== 'drives.upload') throw errors.validation('data.method must be "drives.upload"', 'method')
  const p = Array.isArray(o.params) && o.params.length === 1 ? o.params[0] : undefined
  if (!p || typeof p !== 'object' || (p.uuid === undefined && typeof p.name !== 'string')) throw errors.validation('data.params must be [{"name": ..., "media"?: "disk"|"cdrom"}] or [{"uuid": <existing drive>}]', 'params')
  // the data field is parsed by hand: the same limit, and the same message, as the drive schemas' name
  if (typeof p.name === 'string' && p.name.length > NAME_MAX_LENGTH) throw errors.validation(`Invalid field name: must NOT have more than ${NAME_MAX_LENGTH} characters`, 'name')
  if (p.uuid !== undefined && typeof p.uuid !== 'string') throw errors.validation('data.params[0].uuid must be a drive uuid', 'uuid')
  if (p.media !== undefined && p.media !== 'disk' && p.media !== 'cdrom') throw errors.validation('media must be disk or cdrom', 'media')
  return { method: 'drives.upload', params: [{ name: p.name, media: p.media, uuid: p.uuid }] }
}

export default uploads
