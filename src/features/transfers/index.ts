// The transfers feature: raw, chunked and multipart uploads, direct and one-time-link downloads.
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import type { HandlerSet } from '../../engine/types.ts'
import uploads from './uploads.ts'
import downloads from './downloads.ts'
import { driveUploadHandler } from './handlers/drive-upload.ts'
import { driveDownloadHandler } from './handlers/drive-download.ts'

/** The transfer job handlers, for the engine (registered by app.ts). */
export function transferHandlers (app: FastifyInstance): HandlerSet {
  return { drive_upload: driveUploadHandler(app.storage), drive_download: driveDownloadHandler() }
}

const transfers: FastifyPluginAsync = async (app) => {
  await app.register(uploads)
  await app.register(downloads)
}

export default transfers
