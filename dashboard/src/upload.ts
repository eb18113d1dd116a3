// Upload of a local file (README: "resumable.js uploads"): initupload makes the drive with the
// file's exact size, then the resumable.js library sends the chunks to /drives/{uuid}/upload/,
// three at a time, retrying failed ones. Resuming (the same file into a drive still `uploading`)
// asks first which chunks the service holds (resumable.js's test GETs) and sends only the others.
import Resumable from 'resumablejs'
import { ApiError, api, authHeaders, ok, toErrors, type Drive } from './api.ts'

export const CHUNK_SIZE = 5 * 1024 * 1024
const PARALLEL = 3

export interface UploadProgress { sent: number, total: number }

export async function startUpload (file: File, name: string, media: 'disk' | 'cdrom'): Promise<Drive> {
  const created = await ok(api.POST('/api/2.0/initupload/', { body: { objects: [{ name, size: file.size, media }] } }))
  return (created as { objects: Drive[] }).objects[0]
}

function failure (message: string): ApiError {
  let body: unknown
  try { body = JSON.parse(message) } catch { body = undefined }
  if (body === undefined) {
    return new ApiError(0, [{ error_type: 'network', error_message: `The upload failed${message ? `: ${message.slice(0, 200)}` : ''}`, error_point: null }])
  }
  return new ApiError(400, toErrors(400, body))
}

/**
 * Sends every chunk of `file` into drive `uuid` (made by startUpload, or still `uploading` from an
 * earlier attempt: `resume`); resolves when all are stored, after which the drive becomes unmounted.
 */
export function sendChunks (uuid: string, file: File, onProgress: (p: UploadProgress) => void, opts: { resume?: boolean } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    // permanentErrors is a resumable.js option its type definitions leave out
    const options: Resumable.ConfigurationHash & { permanentErrors: number[] } = {
      target: `${location.origin}/api/2.0/drives/${encodeURIComponent(uuid)}/upload/`,
      chunkSize: CHUNK_SIZE,
      forceChunkSize: false,
      simultaneousUploads: PARALLEL,
      // a new drive holds no chunk yet: test only when resuming
      testChunks: opts.resume === true,
      headers: authHeaders(),
      // the service's 400/404/413/415 are final (a wrong size, another account's drive)
      permanentErrors: [400, 401, 404, 413, 415, 500, 501],
      maxChunkRetries: 5,
      chunkRetryInterval: 1000
    }
    const r = new Resumable(options)
    if (!r.support) {
      reject(new ApiError(0, [{ error_type: 'browser', error_message: 'This browser cannot upload in chunks (no File API)', error_point: null }]))
      return
    }
    onProgress({ sent: 0, total: file.size })
    r.on('fileProgress', (f: Resumable.ResumableFile) => onProgress({ sent: Math.round(f.progress(false) * file.size), total: file.size }))
    r.on('fileSuccess', () => { onProgress({ sent: file.size, total: file.size }); resolve() })
    r.on('fileError', (_f: Resumable.ResumableFile, message: string) => { r.cancel(); reject(failure(message)) })
    r.on('filesAdded', () => r.upload())
    r.addFile(file)
  })
}
