// Wire objects of uploads and downloads (spec §5, decisions.md "Uploads and downloads").
import { Type, type Static } from 'typebox'
import { NAME_MAX_LENGTH, Ref, refTo } from '../../http/schemas.ts'
import { STORAGE_TYPES } from '../../domain/drive-status.ts'

const chunkFields = {
  chunk_number: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'Chunk number, from 0' }),
  chunk_size: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: 'Nominal chunk size S in bytes; chunks 0..n-2 hold S bytes, the last one the rest (S to 2S-1)' })
}

export const UploadChunkInput = Type.Object(chunkFields, { $id: 'UploadChunkInput', description: 'Body of POST /drives/{uuid}/action/?do=upload_chunk' })
/** The same, without $id, for the action dispatcher's own validator. */
export const UploadChunkBody = Type.Object(chunkFields)
export type UploadChunkInputT = Static<typeof UploadChunkInput>

export const ChunkLink = Type.Object({
  link: Type.String({ description: 'Relative URL to POST the chunk bytes to (application/octet-stream); no authentication; valid for UPLOAD_LINK_TTL seconds (default 300)' })
}, { $id: 'ChunkLink' })

export const ChunkReceived = Type.Object({
  chunk: Type.Integer({ description: 'The chunk number (from 0 for upload_chunk links, from 1 for resumable.js)' }),
  bytes: Type.Integer({ description: 'Bytes stored for this chunk' }),
  chunks_stored: Type.Integer(),
  chunks_total: Type.Integer(),
  complete: Type.Boolean({ description: 'true when this was the last missing chunk: the drive becomes unmounted once the image is verified' })
}, { $id: 'ChunkReceived' })

export const InitUploadInput = Type.Object({
  name: Type.String({ maxLength: NAME_MAX_LENGTH }),
  size: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: 'Exact size of the image in bytes' }),
  media: Type.Optional(Type.Union([Type.Literal('disk'), Type.Literal('cdrom')], { default: 'disk' })),
  // as a drive create takes it: a drive's storage_type is one of these (its wire schema says so)
  storage_type: Type.Optional(Type.Enum([...STORAGE_TYPES], { description: 'Set on create, then fixed; default dssd' })),
  affinities: Type.Optional(Type.Array(Type.String())),
  meta: Type.Optional(Type.Record(Type.String(), Type.String())),
  avoid: Type.Optional(Type.Unknown())
}, { $id: 'InitUploadInput' })

export const InitUploadBody = Type.Object({
  objects: Type.Array(refTo(InitUploadInput), { minItems: 1, maxItems: 1 })
}, { $id: 'InitUploadBody', description: 'One drive definition, bare or as {"objects": [drive]}' })

export const UploadJob = Type.Object({
  job_id: Type.String({ format: 'uuid', description: 'The drive_upload job; its resources name the new drive' })
}, { $id: 'UploadJob' })

export const MultipartUploadData = Type.Object({
  method: Type.Literal('drives.upload'),
  params: Type.Array(Type.Object({
    name: Type.Optional(Type.String({ maxLength: NAME_MAX_LENGTH, description: 'Name of the new drive (required without uuid)' })),
    media: Type.Optional(Type.Union([Type.Literal('disk'), Type.Literal('cdrom')])),
    uuid: Type.Optional(Type.String({ description: 'An existing drive to upload into instead; the file must be exactly its size' }))
  }), { minItems: 1, maxItems: 1 })
}, { $id: 'MultipartUploadData', description: 'The `data` form field of POST /_upload/, sent before the `file` field' })
export type MultipartUploadDataT = Static<typeof MultipartUploadData>

export const DownloadLink = Type.Object({
  job: refTo(Ref),
  url: Type.String({ description: 'Relative one-time URL; GET it (no authentication) within DOWNLOAD_LINK_TTL seconds (default 60)' })
}, { $id: 'DownloadLink' })

/** Documentation of raw byte bodies and responses (validation accepts anything: it is a stream). */
export const RawBytes = Type.Unsafe<unknown>({ description: 'Raw image bytes (application/octet-stream)' })

export const transferSchemas = [UploadChunkInput, ChunkLink, ChunkReceived, InitUploadInput, InitUploadBody, UploadJob, MultipartUploadData, DownloadLink]
