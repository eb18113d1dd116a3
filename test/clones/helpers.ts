// Helpers for the clone tests: drives with real data written through the storage, file digests,
// and job polling through the API.
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, statSync } from 'node:fs'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { FastifyInstance } from 'fastify'
import { client, eventually } from '../helpers/app.ts'

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

/** sha256 of a file, or of `length` bytes at `start`. */
export async function sha256 (file: string, start?: number, length?: number): Promise<string> {
  const h = createHash('sha256')
  await pipeline(createReadStream(file, start === undefined ? {} : { start, end: start + (length ?? 1) - 1 }), h)
  return h.digest('hex')
}

export function imageOf (app: FastifyInstance, id: string): { size: number, allocated: number } {
  const st = statSync(app.storage.path(id))
  return { size: st.size, allocated: st.blocks * 512 }
}

export async function getJob (api: Api, id: string): Promise<any> {
  const res = await api.get(`/api/2.0/jobs/${id}/`)
  if (res.statusCode !== 200) throw new Error(`job ${id}: ${res.statusCode} ${res.body}`)
  return res.json()
}

/** Polls the job through the API until it is finished; returns it. */
export async function finishedJob (api: Api, id: string, timeoutMs = 30_000): Promise<any> {
  return eventually(async () => {
    const j = await getJob(api, id)
    return ['success', 'error', 'cancelled'].includes(j.state) ? j : undefined
  }, { timeoutMs })
}

export async function driveStatus (api: Api, id: string): Promise<string | number> {
  const res = await api.get(`/api/2.0/drives/${id}/`)
  return res.statusCode === 200 ? res.json().status : res.statusCode
}
