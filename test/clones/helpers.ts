// Helpers for the clone tests: drives with real data written through the storage, file digests,
// and job polling through the API.
import { createHash, randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { FastifyInstance } from 'fastify'
import { client, eventually } from '../helpers/app.ts'
import { JobEngine } from '../../src/engine/engine.ts'

export type Api = ReturnType<typeof client>
export const MiB = 1024 ** 2
export const GiB = 1024 ** 3

/** Creates a drive through the API and waits until it is unmounted. */
export async function readyDrive (api: Api, body: Record<string, unknown> = {}): Promise<any> {
  const res = await api.post('/api/2.0/drives/', { name: 'disk', size: 64 * MiB, media: 'disk', ...body })
  if (res.statusCode !== 201) throw new Error(`create failed: ${res.statusCode} ${res.body}`)
  const uuid = res.json().objects[0].uuid
  return eventually(async () => {
    const d = (await api.get(`/api/2.0/drives/${uuid}/`)).json()
    return d.status === 'unmounted' ? d : undefined
  })
}

/** Writes `length` random bytes at `offset` of a drive image (4 MiB chunks). */
export async function writeRandom (app: FastifyInstance, id: string, offset: number, length: number): Promise<void> {
  async function * chunks (): AsyncGenerator<Buffer> {
    for (let left = length; left > 0; left -= 4 * MiB) yield randomBytes(Math.min(left, 4 * MiB))
  }
  await pipeline(Readable.from(chunks()), await app.storage.createWriteStream(id, { start: offset }))
}

/** sha256 of a drive image read through the storage (any backend), or of `length` bytes at `start`. */
export async function sha256 (app: FastifyInstance, id: string, start?: number, length?: number): Promise<string> {
  const h = createHash('sha256')
  await pipeline(await app.storage.createReadStream(id, start === undefined ? {} : { start, end: start + (length ?? 1) - 1 }), h)
  return h.digest('hex')
}

export async function imageOf (app: FastifyInstance, id: string): Promise<{ size: number, allocated: number }> {
  return await app.storage.stat(id)
}

/** Whether the app's storage makes copy-on-write clones (rbd): clones then get a drive_flatten child. */
export function cowStorage (app: FastifyInstance): boolean {
  return app.storage.cloneCow !== undefined
}

export async function getJob (api: Api, id: string): Promise<any> {
  const res = await api.get(`/api/2.0/jobs/${id}/`)
  if (res.statusCode !== 200) throw new Error(`job ${id}: ${res.statusCode} ${res.body}`)
  return res.json()
}

/** Polls the job through the API until it is finished; returns it. */
export async function finishedJob (api: Api, id: string, timeoutMs = 60_000): Promise<any> {
  return eventually(async () => {
    const j = await getJob(api, id)
    return ['success', 'error', 'cancelled'].includes(j.state) ? j : undefined
  }, { timeoutMs })
}

/**
 * Like finishedJob, then also waits for every job below it (on copy-on-write storage a
 * drive_clone has a drive_flatten child that runs on after it), so the roll-up is final.
 */
export async function finishedTree (api: Api, id: string, timeoutMs = 60_000): Promise<any> {
  await finishedJob(api, id, timeoutMs)
  const done = (j: any): boolean => ['success', 'error', 'cancelled'].includes(j.state) && (j.children ?? []).every(done)
  return eventually(async () => {
    const j = await getJob(api, id)
    return done(j) ? j : undefined
  }, { timeoutMs })
}

export async function driveStatus (api: Api, id: string): Promise<string | number> {
  const res = await api.get(`/api/2.0/drives/${id}/`)
  return res.statusCode === 200 ? res.json().status : res.statusCode
}

/** A worker process on the app's database with the app's own handlers (polling, no LISTEN). */
export function pollingWorker (app: FastifyInstance): JobEngine {
  const engine = new JobEngine({ prisma: app.prisma, log: app.log, concurrency: 4, leaseSeconds: 30, pollMs: 50 })
  for (const op of ['drive_create', 'drive_clone', 'drive_resize', 'drive_delete', 'server_clone']) engine.register(op, app.jobs.handler(op)!)
  engine.start()
  return engine
}
