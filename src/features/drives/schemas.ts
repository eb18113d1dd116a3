// The drive wire object (spec §2.1) and the bodies of drive requests. Keys are alphabetical, as
// in the CloudSigma dumps.
import { Type, type Static } from 'typebox'
import { DRIVE_STATUSES, MEDIA, STORAGE_TYPES } from '../../domain/drive-status.ts'
import { BULK_MAX_OBJECTS, Meta, NAME_MAX_LENGTH, Ref, RelatedInput, listOf, nullInput, objectsOf, refTo } from '../../http/schemas.ts'

export const DriveRuntime = Type.Object({
  is_downloadable: Type.Boolean(),
  is_ephemeral: Type.Boolean(),
  is_snapshotable: Type.Union([Type.Boolean(), Type.Null()], { description: 'null while the drive is being created' }),
  snapshots_allocated_size: Type.Integer(),
  storage_type: Type.String(),
  allocated_size: Type.Union([Type.Integer(), Type.Null()], {
    description: 'Extension (not in CloudSigma): bytes the image takes on storage, at most about `size` for a sparse image (local: st_blocks × 512 of its file; rbd: `rbd du` used size). ' +
      'Measured when a read finds the figure older than the drive\'s last change, and while the drive is being written; null until measured or when the storage cannot tell.'
  })
}, { $id: 'DriveRuntime' })

const driveProperties = {
  affinities: Type.Array(Type.String(), { description: 'Placement hints, e.g. ["ssd"]' }),
  allow_multimount: Type.Boolean({ description: 'Whether the disk may be attached to several servers' }),
  backup_scheduler: Type.Union([refTo(Ref), Type.Null()]),
  grantees: Type.Array(Type.Unknown()),
  iops: Type.Union([Type.Integer(), Type.Null()]),
  jobs: Type.Array(refTo(Ref), { description: 'Jobs that touch this drive' }),
  licenses: Type.Array(Type.Unknown()),
  media: Type.Enum([...MEDIA], { description: 'disk or cdrom' }),
  meta: refTo(Meta),
  mounted_on: Type.Array(refTo(Ref), { description: 'Servers the drive is attached to' }),
  name: Type.String({ description: 'Human readable name' }),
  owner: Type.Union([refTo(Ref), Type.Null()]),
  permissions: Type.Array(Type.Unknown()),
  remote_snapshots: Type.Array(refTo(Ref)),
  resource_uri: Type.String(),
  runtime: refTo(DriveRuntime),
  size: Type.Integer({ description: 'Size in bytes' }),
  snapshots: Type.Array(refTo(Ref)),
  status: Type.Enum([...DRIVE_STATUSES]),
  storage_type: Type.Enum([...STORAGE_TYPES], { description: 'Set on create, then fixed; default dssd' }),
  tags: Type.Array(refTo(Ref)),
  uuid: Type.String()
}

// Partial: `fields=` may leave any key out. No `default`s here: the serializer would fill them in.
export const Drive = Type.Partial(Type.Object(driveProperties), {
  $id: 'Drive',
  description: 'A drive. Every field is present unless `fields=` leaves it out; the short list has owner, resource_uri, status and uuid.'
})
export type DriveWire = Required<Static<typeof Drive>>
/** The keys `fields=` may keep. */
export const DRIVE_FIELDS: readonly string[] = Object.keys(driveProperties)

export const DriveList = listOf(refTo(Drive), 'DriveList')
export const DriveObjects = objectsOf(refTo(Drive), 'DriveObjects')

/** Writable fields. Read-only ones are not listed, so ajv's removeAdditional drops them. */
const writable = {
  name: Type.String({ maxLength: NAME_MAX_LENGTH }),
  size: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: 'Bytes' }),
  media: Type.Enum([...MEDIA]),
  storage_type: Type.Enum([...STORAGE_TYPES]),
  allow_multimount: Type.Boolean(),
  affinities: Type.Array(Type.String({ maxLength: 64 })),
  meta: refTo(Meta),
  tags: Type.Array(refTo(RelatedInput)),
  iops: Type.Union([nullInput(), Type.Integer({ minimum: 0, maximum: 2147483647 })])
}

export const DriveCreateInput = Type.Object({
  name: writable.name,
  size: writable.size,
  media: writable.media,
  storage_type: Type.Optional(writable.storage_type),
  allow_multimount: Type.Optional(writable.allow_multimount),
  affinities: Type.Optional(writable.affinities),
  meta: Type.Optional(writable.meta),
  tags: Type.Optional(writable.tags),
  iops: Type.Optional(writable.iops)
}, { $id: 'DriveCreateInput', additionalProperties: false })
export type DriveCreateInputT = Static<typeof DriveCreateInput>

/** POST /drives/ body after createBodyHook turned every envelope into `{objects: [...]}`. */
export const DriveCreateBody = Type.Object({
  objects: Type.Array(refTo(DriveCreateInput), { minItems: 1 })
}, { $id: 'DriveCreateBody', description: 'A drive, an array of drives, or {"objects": [drives]}' })

/** PUT /drives/{uuid}/: any subset of the writable fields; read-only fields are ignored. */
export const DriveUpdateInput = Type.Partial(DriveCreateInput, { $id: 'DriveUpdateInput', additionalProperties: false })
export type DriveUpdateInputT = Static<typeof DriveUpdateInput>

/** ?do=resize: a full drive definition; size is required. */
export const DriveResizeInput = Type.Object({
  ...DriveUpdateInput.properties,
  size: writable.size
}, { $id: 'DriveResizeInput', additionalProperties: false })

/** PUT /drives/ (bulk update): each object names its drive by uuid (or resource_uri). */
export const DriveBulkUpdateInput = Type.Object({
  ...DriveUpdateInput.properties,
  uuid: Type.Optional(Type.String()),
  resource_uri: Type.Optional(Type.String())
}, { $id: 'DriveBulkUpdateInput', additionalProperties: false })

export const DriveBulkUpdateBody = Type.Object({
  objects: Type.Array(refTo(DriveBulkUpdateInput), { minItems: 1, maxItems: BULK_MAX_OBJECTS })
}, { $id: 'DriveBulkUpdateBody', description: '{"objects": [drive with uuid, ...]}, a bare array, or one drive with its uuid' })

export const DriveDeleteBody = Type.Object({
  objects: Type.Array(refTo(RelatedInput), { minItems: 1, maxItems: BULK_MAX_OBJECTS })
}, { $id: 'DriveDeleteBody', description: '{"objects": [{"uuid": ...}, ...]}, a bare array of the same, or one {"uuid": ...}; each item a uuid, a resource URI or an object with uuid or resource_uri' })

export const driveSchemas = [DriveRuntime, Drive, DriveList, DriveObjects, DriveCreateInput, DriveCreateBody, DriveUpdateInput, DriveResizeInput, DriveBulkUpdateInput, DriveBulkUpdateBody, DriveDeleteBody]
