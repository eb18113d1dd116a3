// Helpers shared by the transfer tests: random images, sha256, a listening app for real sockets.
import { createHash, randomBytes, randomUUID } from 'node:crypto'
import http from 'node:http'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import type { Test } from 'tap'
import { type client, eventually } from '../helpers/app.ts'
import { waitForJob } from '../helpers/jobs.ts'
import { discardUpload } from '../../src/features/transfers/service.ts'

export const MiB = 1024 * 1024

export function randomImage (size: number): Buffer {
  return randomBytes(size)
}

export function sha256 (data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

/** Listens on a free port (for tests that need a real socket); closed with the app. */
export async function listen (app: FastifyInstance): Promise<string> {
  await app.listen({ host: '127.0.0.1', port: 0 })
  return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
}

export interface RawResponse { status: number, headers: http.IncomingHttpHeaders, body: Buffer }

/** A plain HTTP request over a real socket. */
export function request (url: string, opts: http.RequestOptions & { body?: Buffer }): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { agent: false, ...opts }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(opts.body)
  })
}

/**
 * A raw upload's request line and headers (PUT /drives/upload/`name`, `authorization`) on a real
 * socket of its own to the app listening at `base`; the body is the caller's.
 */
export async function rawPutHeaders (base: string, authorization: string, name: string, length: number): Promise<net.Socket> {
  const sock = net.connect(Number(new URL(base).port), '127.0.0.1')
  await new Promise(resolve => sock.once('connect', resolve))
  sock.write([
    `PUT /api/2.0/drives/upload/${name} HTTP/1.1`,
    'Host: 127.0.0.1',
    `Authorization: ${authorization}`,
    'Content-Type: application/octet-stream',
    `Content-Length: ${length}`,
    '', ''
  ].join('\r\n'))
  return sock
}

/** A multipart/form-data body for POST /_upload/: the `data` field (drives.upload with `params`), then the file. */
export function uploadForm (params: Record<string, unknown>, file: Buffer): { payload: Buffer, headers: Record<string, string> } {
  const boundary = '----clonejobs' + randomUUID()
  const payload = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="data"\r\n\r\n${JSON.stringify({ method: 'drives.upload', params: [params] })}\r\n`),
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="image.raw"\r\nContent-Type: application/octet-stream\r\n\r\n`),
    file,
    Buffer.from(`\r\n--${boundary}--\r\n`)
  ])
  return { payload, headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } }
}

/**
 * A drive's data, through the API; returns once the download's job has settled (later on rbd,
 * where an export process ends): until then it holds the drive, and an upload would rightly be busy.
 */
export async function driveContents (app: FastifyInstance, api: ReturnType<typeof client>, uuid: string): Promise<Buffer> {
  const data = (await api.get(`/api/2.0/drives/${uuid}/download/`)).rawPayload
  await eventually(async () => (await app.prisma.job.count({
    where: { operation: 'drive_download', state: { in: ['queued', 'started', 'cancelling'] }, links: { some: { resourceId: uuid } } }
  })) === 0 || undefined)
  return data
}

/** The finished drive_upload job of the upload that made drive `driveId`. */
export async function finishedUploadOf (app: FastifyInstance, ownerId: string, driveId: string) {
  const job = await eventually(async () => (await app.prisma.job.findFirst({ where: { ownerId, operation: 'drive_upload', params: { path: ['driveId'], equals: driveId } } })) ?? undefined)
  return waitForJob(app, job.id)
}

/** An upload its client cut short: its job is the client's error (validation), not a database outage. */
export async function assertCutByClient (t: Test, app: FastifyInstance, ownerId: string, driveId: string): Promise<void> {
  const done = await finishedUploadOf(app, ownerId, driveId)
  t.equal(done.state, 'error')
  const error = done.error as { error_type: string, error_message: string }
  t.not(error.error_type, 'database', 'not recorded as a database outage')
  t.match(error, { error_type: 'validation', error_message: /connection ended early/ })
}

/**
 * Local drives let go of written buffers, so a socket's reads move to the hash worker once stored;
 * rbd's pipe to its import process may still hold them, so they are copied (STORAGE=rbd).
 */
export const storageReleasesBuffers = process.env.STORAGE !== 'rbd'

/** The bytes an upload's job log says moved to the hash worker without a copy (its time split), in MiB. */
export async function movedMiB (api: ReturnType<typeof client>, jobId: string): Promise<number> {
  const log = (await api.get(`/api/2.0/jobs/${jobId}/log/`)).body
  const m = /([\d.]+) (B|MiB|GiB) of the bod(?:y|ies) handed to it without a copy/.exec(log)
  if (!m) throw new Error(`the job log says nothing of bytes handed over: ${log}`)
  return Number(m[1]) / (m[2] === 'B' ? MiB : m[2] === 'GiB' ? 1 / 1024 : 1)
}

/**
 * An upload on `sock` (a real socket, its body under way) into a new drive named `name`, whose job
 * another process takes over (its lease had run out): the request touches nothing more. It answers
 * 503, and the drive, its image and the job are left as the newer attempt found them; then this
 * undoes the upload as the newer attempt's cleanup would.
 */
export async function assertTakenOverMidBody (t: Test, app: FastifyInstance, sock: net.Socket, ownerId: string, name: string): Promise<void> {
  let answer = ''
  sock.on('data', (d: Buffer) => { answer += d.toString() })
  const uploading = await eventually(async () => (await app.prisma.drive.findFirst({ where: { ownerId, name } })) ?? undefined)
  const jobId = uploading.lockedByJob!
  await app.prisma.job.update({ where: { id: jobId }, data: { lockedBy: 'someone-else' } })
  // the request's heartbeat finds out; the whole answer, headers and body (its Content-Length)
  const complete = () => {
    const end = answer.indexOf('\r\n\r\n')
    const length = /\r\ncontent-length: (\d+)/i.exec(answer)
    return end >= 0 && length !== null && Buffer.byteLength(answer.slice(end + 4)) >= Number(length[1])
  }
  await eventually(async () => complete() || undefined, { timeoutMs: 20_000 })
  sock.destroy()
  t.match(answer, /^HTTP\/1\.1 503 /, answer)
  t.match(answer, /taken over by another process; see the job for its outcome/)
  t.equal((await app.prisma.drive.findUnique({ where: { id: uploading.id } }))?.lockedByJob, jobId, 'the drive is still the job\'s, for the newer attempt to undo')
  t.ok(await app.storage.exists(uploading.id), 'its image too')
  t.match(await app.prisma.job.findUniqueOrThrow({ where: { id: jobId } }), { state: 'started', lockedBy: 'someone-else' }, 'the job is the newer attempt\'s, its outcome unrecorded')
  // as the newer attempt's cleanup would (on rbd the stale request's import process must have let
  // the image go: removal waits out a moment of "image has watchers", not an import left running)
  await discardUpload(app.prisma, app.storage, ownerId, uploading.id, jobId)
  await app.prisma.job.update({ where: { id: jobId }, data: { state: 'error', lockedBy: null } })
}
