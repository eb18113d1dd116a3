// /api/2.0/drives/: list, detail, schema, create (single and bulk), get, update, delete (single
// and bulk), and the action dispatcher (?do=resize here; clone, upload_chunk, download elsewhere).
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { Action } from '../../http/actions.ts'
import { bulkUpdateItems, createBodyHook, requireRelatedUuid } from '../../http/bodies.ts'
import { parseFields, pickFields } from '../../http/listing.ts'
import { describeResource } from '../../http/resource-schema.ts'
import { DRIVE_STATUSES, MEDIA, STORAGE_TYPES } from '../../domain/drive-status.ts'
import { AvailabilityGroup, AvailabilityGroups, FIELDS_DESCRIPTION, ListQuery, UuidParams, errorResponses, refTo, ResourceSchema } from '../../http/schemas.ts'
import {
  Drive, DriveBulkUpdateBody, DriveCreateBody, DriveDeleteBody, DriveList, DriveObjects, DriveResizeInput, DriveUpdateInput,
  DRIVE_FIELDS, driveSchemas, type DriveUpdateInputT
} from './schemas.ts'
import {
  deleteDrives, driveAvailabilityGroup, driveAvailabilityGroups, loadDriveWire, updateDrive, updateDrives, type DrivesDeps, type MeasureAllocated
} from './service.ts'
import { parseAvoid } from '../../domain/avoid.ts'
import { refreshAllocated } from './allocated.ts'
import { getDriveWireSql, readDrives } from './read-sql.ts'
import { createDrivesSql } from './create-sql.ts'
import { driveCreateHandler } from './handlers/drive-create.ts'
import { driveResizeHandler } from './handlers/drive-resize.ts'
import { driveDeleteHandler } from './handlers/drive-delete.ts'
import type { FastifyInstance } from 'fastify'
import type { HandlerSet } from '../../engine/types.ts'

const TAGS = ['drives']

/** The drive job handlers, for the engine (registered by app.ts). */
export function driveHandlers (app: FastifyInstance): HandlerSet {
  return {
    drive_create: driveCreateHandler(app.storage, app.dbPool),
    drive_resize: driveResizeHandler(app.storage),
    drive_delete: driveDeleteHandler(app.storage)
  }
}

// ?do=resize; registered into each app's drive actions by the plugin below
const resize: Action = {
  summary: 'Resize (update or fail, §2.7): 202 {"objects":[drive]} with status resizing',
  body: refTo(DriveResizeInput),
  result: refTo(DriveObjects),
  run: async ({ app, reply, ownerId, uuid, body }) => {
    const drive = await updateDrive(deps(app), ownerId, uuid, body as DriveUpdateInputT, { strict: true })
    reply.code(202)
    return { objects: [drive] }
  }
}

function deps (app: { prisma: DrivesDeps['prisma'], config: { driveMaxSize: number } }): DrivesDeps {
  return { prisma: app.prisma, driveMaxSize: app.config.driveMaxSize }
}

const drives: FastifyPluginAsyncTypebox = async (app) => {
  for (const s of driveSchemas) app.addSchema(s)
  app.actions.drive.register('resize', resize)
  // runtime.allocated_size, measured where the cached figure is stale (allocated.ts)
  const measure: MeasureAllocated = (rows) => refreshAllocated(app.dbPool, app.storage, rows)
  app.events.registerLoader('drives', (prisma, ownerId, id) => loadDriveWire(prisma, ownerId, id, measure))

  const listSchema = (summary: string) => ({
    tags: TAGS,
    summary,
    description: 'Filters: name, name__contains, uuid, tag, status, media, storage_type (comma = OR). order_by: name (default), uuid, size, status, media, storage_type.',
    querystring: ListQuery,
    response: { 200: refTo(DriveList), ...errorResponses() }
  })

  app.get('/drives/', { schema: listSchema('List drives (owner, resource_uri, status, uuid)') },
    async (request) => readDrives(app.dbPool, app.prisma, request.account.id, request.query, false, measure) as never)

  app.get('/drives/detail/', { schema: listSchema('List drives with all fields') },
    async (request) => readDrives(app.dbPool, app.prisma, request.account.id, request.query, true, measure) as never)

  app.get('/drives/schema/', { schema: { tags: TAGS, summary: 'The drive resource schema', response: { 200: refTo(ResourceSchema), ...errorResponses() } } }, async () => describeResource(Drive, {
    readonly: ['backup_scheduler', 'jobs', 'mounted_on', 'owner', 'remote_snapshots', 'resource_uri', 'runtime', 'snapshots', 'status', 'uuid'],
    required: ['media', 'name', 'size'],
    filtering: { media: 'exact', name: 'exact', name__contains: 'exact', status: 'exact', storage_type: 'exact', tag: 'exact', uuid: 'exact' },
    ordering: ['name', 'uuid', 'size', 'status', 'media', 'storage_type'],
    detailMethods: ['get', 'put', 'delete'],
    listMethods: ['get', 'put', 'delete', 'post'],
    defaults: { affinities: [], allow_multimount: false, iops: null, meta: {}, storage_type: 'dssd', tags: [] },
    choices: { media: MEDIA, status: DRIVE_STATUSES, storage_type: STORAGE_TYPES, affinities: ['ssd'] }
  }))

  // static paths: the router takes them before /drives/{uuid}/ (no drive is called availability_groups)
  const placementNote = 'Storage hosts: with STORAGE=local every image is a file under one root on one machine, so all the account\'s drives share that host ' +
    '(one group: `avoid` cannot place a drive elsewhere). With STORAGE=rbd Ceph stripes every image over all the OSDs of the pool, with replicas on other hosts, ' +
    'so no host holds a drive alone: each drive is a group of its own (already apart for `avoid`). A pool whose copies do not sit on different hosts ' +
    '(size 1, an OSD failure domain, or one host) puts every image on the same disks: then all the drives are one group, as with local files. Only the caller\'s drives appear.'
  app.get('/drives/availability_groups/', {
    schema: {
      tags: TAGS,
      summary: 'The caller\'s drives grouped by the storage host they share: an array of arrays of drive uuids',
      description: placementNote,
      response: { 200: refTo(AvailabilityGroups), ...errorResponses() }
    }
  }, async (request) => driveAvailabilityGroups(app.prisma, request.account.id, await app.storage.placement()))

  app.get('/drives/availability_groups/:uuid/', {
    schema: {
      tags: TAGS,
      summary: 'The drives on the same storage host as this one, itself included: a flat array of drive uuids',
      description: placementNote + ' Another account\'s or an unknown drive is 404.',
      params: UuidParams,
      response: { 200: refTo(AvailabilityGroup), ...errorResponses(404) }
    }
  }, async (request) => driveAvailabilityGroup(app.prisma, request.account.id, request.params.uuid, await app.storage.placement()))

  app.post('/drives/', {
    preValidation: createBodyHook,
    schema: {
      tags: TAGS,
      summary: 'Create drives: a drive, an array, or {"objects": [...]}; all or none',
      querystring: Type.Object({ avoid: Type.Optional(Type.String({ description: 'uuids of drives or servers to keep apart from (advisory)' })) }, { additionalProperties: true }),
      body: refTo(DriveCreateBody),
      response: { 201: refTo(DriveObjects), ...errorResponses() }
    }
  }, async (request, reply) => {
    parseAvoid(request.query.avoid)
    const objects = await createDrivesSql(app.dbPool, app.config.driveMaxSize, request.account.id, request.body.objects)
    // Location only when one object was made: a bulk create has no single new resource
    if (objects.length === 1) reply.header('location', objects[0].resource_uri)
    return reply.code(201).send({ objects } as never)
  })

  app.put('/drives/', {
    preValidation: createBodyHook,
    schema: {
      tags: TAGS,
      summary: 'Update several drives, all or none: {"objects": [drive with uuid, ...]} (or a bare array); 200 {"objects": [updated drives]}',
      body: refTo(DriveBulkUpdateBody),
      response: { 200: refTo(DriveObjects), ...errorResponses(404, 503) }
    }
  }, async (request) => {
    return { objects: await updateDrives(deps(app), request.account.id, bulkUpdateItems(request.body.objects, 'drives')) } as never
  })

  app.delete('/drives/', {
    preValidation: createBodyHook,
    schema: {
      tags: TAGS,
      summary: 'Delete several drives, all or none',
      description: 'Body: {"objects": [{"uuid": ...}, ...]}, a bare array, or one {"uuid": ...}; an item may also be a uuid or a resource URI. ' +
        'An unknown or another account\'s drive (404), a busy one (503) or one on a running server (400 at status) deletes nothing.',
      body: refTo(DriveDeleteBody),
      response: { 204: Type.Null({ description: 'Deletion has started' }), ...errorResponses(404, 503) }
    }
  }, async (request, reply) => {
    const ids = request.body.objects.map(o => requireRelatedUuid(o, 'uuid', 'drives'))
    await deleteDrives(deps(app), request.account.id, ids)
    return reply.code(204).send(null)
  })

  app.get('/drives/:uuid/', {
    schema: {
      tags: TAGS,
      summary: 'One drive',
      params: UuidParams,
      querystring: Type.Object({ fields: Type.Optional(Type.String({ description: FIELDS_DESCRIPTION })) }, { additionalProperties: true }),
      response: { 200: refTo(Drive), ...errorResponses(404) }
    }
  }, async (request) => {
    const fields = parseFields(request.query.fields, DRIVE_FIELDS)
    const drive = await getDriveWireSql(app.dbPool, request.account.id, request.params.uuid, measure)
    return pickFields(drive, fields) as never
  })

  app.put('/drives/:uuid/', {
    schema: {
      tags: TAGS,
      summary: 'Update a drive (§2.6); a new size starts a resize and answers with status resizing and the old size',
      params: UuidParams,
      body: refTo(DriveUpdateInput),
      response: { 200: refTo(Drive), ...errorResponses(404, 503) }
    }
  }, async (request) => updateDrive(deps(app), request.account.id, request.params.uuid, request.body, { strict: false }) as never)

  app.delete('/drives/:uuid/', {
    schema: {
      tags: TAGS,
      summary: 'Delete a drive; answers 204 at once and the drive is gone shortly after',
      params: UuidParams,
      response: { 204: Type.Null({ description: 'Deletion has started' }), ...errorResponses(404, 503) }
    }
  }, async (request, reply) => {
    await deleteDrives(deps(app), request.account.id, [request.params.uuid])
    return reply.code(204).send(null)
  })

  app.post('/drives/:uuid/action/', {
    schema: {
      tags: TAGS,
      summary: 'An action on a drive, chosen by ?do=',
      description: 'resize: a full drive definition, 202 {"objects": [drive]}. Other actions are documented with their feature.',
      params: UuidParams,
      querystring: Type.Object({
        do: Type.String({ description: 'The action' }),
        avoid: Type.Optional(Type.String())
      }, { additionalProperties: true }),
      response: { 202: Type.Unknown({ description: 'Depends on the action' }), ...errorResponses(404, 416, 503) }
    }
  }, async (request, reply) => app.actions.drive.dispatch(app, request, reply) as never)
}

export default drives
