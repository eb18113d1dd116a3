// Bodies of the clone actions (spec §2.9, §3.5). Both are optional: no body, {} and null all mean
// "clone as it is". Read-only and unknown keys are dropped by ajv (removeAdditional).
import { Type, type Static } from 'typebox'
import { MEDIA, STORAGE_TYPES } from '../../domain/drive-status.ts'
import { Meta, NAME_MAX_LENGTH, RelatedInput, refTo } from '../../http/schemas.ts'

export const DriveCloneInput = Type.Object({
  name: Type.Optional(Type.String({ maxLength: NAME_MAX_LENGTH, description: 'Name of the clone; without it the account\'s clone_naming applies' })),
  media: Type.Optional(Type.Enum([...MEDIA], { description: 'A clone may switch disk and cdrom' })),
  affinities: Type.Optional(Type.Array(Type.String({ maxLength: 64 }))),
  size: Type.Optional(Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: 'Bytes; at least the source\'s size (default: the same)' })),
  storage_type: Type.Optional(Type.Enum([...STORAGE_TYPES], { description: 'Default: the source\'s storage type' })),
  allow_multimount: Type.Optional(Type.Boolean()),
  meta: Type.Optional(refTo(Meta)),
  tags: Type.Optional(Type.Array(refTo(RelatedInput)))
}, { $id: 'DriveCloneInput', additionalProperties: false, description: 'Optional drive clone definition; meta and tags are copied unless given' })
export type DriveCloneInputT = Static<typeof DriveCloneInput>

export const ServerCloneInput = Type.Object({
  name: Type.Optional(Type.String({ maxLength: NAME_MAX_LENGTH, description: 'Name of the new server; without it the account\'s clone_naming applies' })),
  random_vnc_password: Type.Optional(Type.Boolean({ description: 'true: a new random 8-character VNC password instead of a copy' }))
}, { $id: 'ServerCloneInput', additionalProperties: false, description: 'Optional server clone options' })
export type ServerCloneInputT = Static<typeof ServerCloneInput>

/**
 * The same bodies without `$id`, for the action dispatchers' per-request validation: the action
 * registries compile them on the fly, and an `$id` would clash with the registered schemas.
 */
export const driveCloneBody = Type.Object(DriveCloneInput.properties, { additionalProperties: false })
export const serverCloneBody = Type.Object(ServerCloneInput.properties, { additionalProperties: false })
