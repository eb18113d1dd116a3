// Chunked upload of a local file (README: "Chunked, resumable upload"): initupload makes the
// drive, then each chunk gets a one-time link from upload_chunk and its bytes are POSTed there.
// A chunk the service already holds answers 416 and is skipped, so calling again resumes.
import { ApiError, api, ok, toErrors, type Drive } from './api.ts'

export const CHUNK_SIZE = 5 * 1024 * 1024
const PARALLEL = 3

export interface UploadProgress { sent: number, total: number }

export async function startUpload (file: File, name: string, media: 'disk' | 'cdrom'): Promise<Drive> {
  const created = await ok(api.POST('/api/2.0/initupload/', { body: { objects: [{ name, size: file.size, media }] } }))
  return (created as { objects: Drive[] }).objects[0]
}

/** Sends every chunk of `file` to drive `uuid`; resolves when all are stored. */
export async function sendChunks (uuid: string, file: File, onProgress: (p: UploadProgress) => void, signal?: AbortSignal): Promise<void> {
  const count = Math.max(1, Math.floor(file.size / CHUNK_SIZE))
  let next = 0
  let sent = 0
  onProgress({ sent, total: file.size })
  const one = async (n: number): Promise<void> => {
    const start = n * CHUNK_SIZE
    const end = n === count - 1 ? file.size : start + CHUNK_SIZE
    const link = await api.POST('/api/2.0/drives/{uuid}/action/', {
      params: { path: { uuid }, query: { do: 'upload_chunk' } },
      body: { chunk_number: n, chunk_size: CHUNK_SIZE } as never
    })
    if (link.response.status === 416) { sent += end - start; onProgress({ sent, total: file.size }); return }
    if (!link.response.ok) throw new ApiError(link.response.status, toErrors(link.response.status, link.error))
    const url = (link.data as { link: string }).link
    const res = await fetch(url, { method: 'POST', body: file.slice(start, end), headers: { 'content-type': 'application/octet-stream' }, credentials: 'omit', signal })
    if (!res.ok) throw new ApiError(res.status, toErrors(res.status, await res.json().catch(() => undefined)))
    sent += end - start
    onProgress({ sent, total: file.size })
  }
  const worker = async (): Promise<void> => {
    while (next < count) {
      if (signal?.aborted) throw new Error('upload stopped')
      await one(next++)
    }
  }
  await Promise.all(Array.from({ length: Math.min(PARALLEL, count) }, worker))
}
