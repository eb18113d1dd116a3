// Downloads of drive images (spec §5.1, decisions.md "Uploads and downloads"):
//   GET /drives/{uuid}/download/                 Basic auth, Range support
//   POST /drives/{uuid}/action/?do=download      → 202 {"job", "url"}: a one-time link
//   GET /downloads/{token}/                      the link (no auth); once; within DOWNLOAD_LINK_TTL
//   HEAD of either                               the GET's status and headers; no job, the link unused
// Each download is a drive_download job with byte progress; it succeeds when the last byte is
// sent and fails when the client goes away first.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply } from 'fastify'
import type { OutgoingHttpHeaders } from 'node:http'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { Type } from 'typebox'
import { errors } from '../../http/errors.ts'
import { UuidParams, errorResponses, refTo } from '../../http/schemas.ts'
import { DownloadLink, RawBytes, transferSchemas } from './schemas.ts'
import type { Action } from '../../http/actions.ts'
import { loadOwnedDrive } from '../drives/service.ts'
import { formatBytes } from '../../domain/progress.ts'
import { Meter } from './streams.ts'
import { ImagePump } from './pump.ts'
import type { DriveReader } from '../../storage/index.ts'
import { assertDownloadable, createDownloadLink, parseRange, peekDownloadLink, startDirectDownload, useDownloadLink, type ByteRange } from './download-jobs.ts'
import { failureRecord, transferDeps, type HeldJob, type TransferDeps } from './service.ts'
import type { DriveRow } from '../drives/service.ts'

const TAGS = ['transfers']

// ?do=download; registered into each app's drive actions by the plugin below
const downloadLink: Action = {
  result: refTo(DownloadLink),
  summary: 'A one-time download link: 202 {"job": {resource_uri, uuid}, "url"}; start it within 60 s or the job is cancelled',
  run: async ({ app, reply, ownerId, uuid }) => {
    reply.code(202)
    return createDownloadLink(transferDeps(app), ownerId, uuid)
  }
}

function imageHeaders (reply: FastifyReply, drive: DriveRow, range: ByteRange | undefined): number {
  const size = Number(drive.size)
  const length = range ? range.end - range.start + 1 : size
  reply.header('content-type', 'application/octet-stream')
  reply.header('content-disposition', `attachment; filename="${drive.id}"`)
  reply.header('accept-ranges', 'bytes')
  reply.header('content-length', String(length))
  if (range) reply.code(206).header('content-range', `bytes ${range.start}-${range.end}/${size}`)
  return length
}

/** A HEAD's answer: the download's status and headers, no body (a HEAD route keeps Content-Length). */
function headImage (reply: FastifyReply, drive: DriveRow, range: ByteRange | undefined): FastifyReply {
  imageHeaders(reply, drive, range)
  return reply.send()
}

/**
 * Downloads whose job's end is not recorded yet, counted from the start of the response: a
 * connection cut by the stop emits 'close' (and so records its job) only after the server has
 * closed, when the onClose hooks are already running, so the stop waits on these, not on 'close'.
 */
class Settling {
  private readonly open = new Set<Promise<void>>()

  /** A download starts; call the returned function once its job's end is recorded. */
  begin (): () => void {
    let done!: () => void
    const p = new Promise<void>(resolve => { done = resolve })
    this.open.add(p)
    void p.then(() => this.open.delete(p))
    return done
  }

  /** Resolves when every download has recorded its end, or after `ms` (a stuck write must not hold the stop). */
  async drain (ms: number): Promise<void> {
    if (this.open.size === 0) return
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      Promise.allSettled([...this.open]),
      new Promise(resolve => { timer = setTimeout(resolve, ms) })
    ])
    clearTimeout(timer)
  }
}

/**
 * The Range header to serve, if any. With `If-Range` it is ignored and the whole image sent
 * (RFC 9110 §13.1.5): the service gives no validator (ETag, Last-Modified) for an image, whose
 * bytes an upload may have replaced since, so none a client sends can match; a range resumed
 * across such a change would join two images' bytes.
 */
function rangeAsked (headers: { range?: string, 'if-range'?: string }): string | undefined {
  return headers['if-range'] === undefined ? headers.range : undefined
}

/**
 * Sends the image (or a range) as the job's work; the job settles when the response does. Where
 * the storage reads into the caller's buffers (local files) the bytes go out through an ImagePump
 * (buffers reused, pump.ts) on the raw response; otherwise (rbd) a read stream is sent.
 */
async function sendImage (deps: TransferDeps, settling: Settling, reply: FastifyReply, held: HeldJob, drive: DriveRow, range: ByteRange | undefined): Promise<FastifyReply> {
  const recorded = settling.begin()
  const length = imageHeaders(reply, drive, range)
  let source: Readable | DriveReader
  try {
    // the whole image with its last byte named: a stream that finds its end by one more read
    // (EOF) ends the response a thread-pool round trip after the last byte went out, and a client
    // that closes on having every byte (Content-Length) was taken for one gone midway
    source = deps.storage.openForRead !== undefined
      ? await deps.storage.openForRead(drive.id)
      : await deps.storage.createReadStream(drive.id, range ?? (length > 0 ? { start: 0, end: length - 1 } : {}))
  } catch (err) {
    await held.fail(failureRecord(err)).finally(recorded)
    throw err
  }
  const t0 = performance.now()
  held.log(`sending ${range ? `bytes ${range.start}-${range.end}` : 'the whole image'} of drive ${drive.id} (${length} bytes)`)
  let sent: () => number
  let sending: Promise<void>
  let cancel: (err: Error) => void
  if (source instanceof Readable) {
    const meter = new Meter(Number.MAX_SAFE_INTEGER, false, (n) => held.progress(n))
    sending = pipeline(source, meter).catch(() => {})
    sent = () => meter.bytes
    cancel = (err) => { meter.destroy(err) }
    void reply.send(meter)
  } else {
    // the raw response: Fastify's send would take a stream, whose buffers cannot be reused.
    // onResponse hooks still run; the headers set so far go out with the status
    reply.hijack()
    const res = reply.raw
    res.writeHead(reply.statusCode, reply.getHeaders() as OutgoingHttpHeaders)
    const pump = new ImagePump(source, res, range?.start ?? 0, length, (n) => held.progress(n))
    const reader = source
    sending = pump.run().catch((err: unknown) => { res.destroy(err as Error) }).finally(() => reader.close())
    sent = () => pump.sent
    cancel = (err) => { res.destroy(err) }
  }
  let settled = false
  const settle = (): void => {
    if (settled) return
    settled = true
    // every byte went through and the response was ended ('close' may come before 'finish')
    const complete = (reply.raw.writableFinished || reply.raw.writableEnded) && sent() === length
    void sending.then(async () => {
      if (complete) {
        const seconds = (performance.now() - t0) / 1000
        held.log(`sent ${sent()} bytes in ${Math.round(seconds * 1000)} ms`)
        held.describe(`sent ${formatBytes(sent())} in ${seconds.toFixed(1)} s`)
        await deps.prisma.$transaction(async (tx) => held.finish(tx, { state: 'success', result: { bytes: sent() } }))
          .catch(err => deps.log.error({ err, job: held.id }, 'could not record a finished download'))
      } else {
        await held.fail(failureRecord(errors.validation(`The client went away after ${sent()} of ${length} bytes`)))
      }
    }).finally(recorded)
  }
  reply.raw.once('finish', settle)
  reply.raw.once('close', settle)
  held.signal.addEventListener('abort', () => { cancel(new Error('download cancelled')) }, { once: true })
  return reply
}

const imageResponse = (what: string) => ({
  200: { ...RawBytes, description: `${what}: the whole image (application/octet-stream), Content-Disposition: attachment; filename="<drive uuid>"` },
  206: { ...RawBytes, description: 'The requested byte range, with Content-Range' }
})

const downloads: FastifyPluginAsyncTypebox = async (app) => {
  for (const s of transferSchemas) app.addSchema(s)
  app.actions.drive.register('download', downloadLink)
  // a download cut by a stop records its job's end before the database client closes (this
  // plugin's onClose runs before the prisma plugin's), waiting at most one more grace period
  const settling = new Settling()
  app.addHook('onClose', async () => { await settling.drain(app.config.stopGraceMs) })
  const deps = transferDeps(app)

  // HEAD (curl -I, a client sizing the image first): the GET's status and headers, no body, and
  // no job or use of a link, since nothing is sent. Its own routes, the GETs exposing none:
  // Fastify's HEAD for a GET runs the GET's handler (a job; a one-time link used up) and
  // answers a body-less reply with Content-Length: 0
  const directSchema = {
    tags: TAGS,
    summary: 'Download a drive image (§5.1), with Range support',
    description: 'One `Range: bytes=a-b` range is served as 206 with Content-Range; a range past the end is 416. ' +
      'The drive must not be creating, uploading or cloning_dst (400). Each download is a drive_download job with byte progress. ' +
      'HEAD answers the same status and headers without the body, and starts no job.',
    produces: ['application/octet-stream'],
    params: UuidParams,
    response: { ...imageResponse('The image'), ...errorResponses(404, 416, 503) }
  }
  const directConfig = { produces: ['application/octet-stream'] }
  app.head('/drives/:uuid/download/', { config: directConfig, schema: { ...directSchema, hide: true } }, async (request, reply) => {
    const drive = await loadOwnedDrive(app.prisma, request.account.id, request.params.uuid)
    assertDownloadable(drive)
    return headImage(reply, drive, parseRange(rangeAsked(request.headers), Number(drive.size)))
  })
  app.get('/drives/:uuid/download/', { config: directConfig, exposeHeadRoute: false, schema: directSchema }, async (request, reply) => {
    const { held, drive, range } = await startDirectDownload(deps, request.account.id, request.params.uuid, (size) => parseRange(rangeAsked(request.headers), size))
    return sendImage(deps, settling, reply, held, drive, range)
  })

  const linkSchema = {
    tags: TAGS,
    summary: 'Use a one-time download link (no authentication; the token is the credential)',
    description: 'Works once: a second use, an expired link or a cancelled job answer 410. The whole image is sent (no Range). ' +
      'HEAD answers the same status and headers without the body, and does not use the link.',
    produces: ['application/octet-stream'],
    security: [],
    params: Type.Object({ token: Type.String() }),
    response: { 200: imageResponse('The image')[200], ...errorResponses(404, 410) }
  }
  const linkConfig = { auth: false, produces: ['application/octet-stream'] }
  app.head('/downloads/:token/', { config: linkConfig, schema: { ...linkSchema, hide: true } }, async (request, reply) => {
    return headImage(reply, await peekDownloadLink(deps, request.params.token), undefined)
  })
  app.get('/downloads/:token/', { config: linkConfig, exposeHeadRoute: false, schema: linkSchema }, async (request, reply) => {
    const { held, drive } = await useDownloadLink(deps, request.params.token)
    return sendImage(deps, settling, reply, held, drive, undefined)
  })
}

export default downloads
