// /api/2.0/servers/: list, detail, schema, availability groups, create (single and bulk), get,
// update and delete (single and bulk; delete with ?recurse=), and the action dispatcher (?do=start|stop|shutdown|open_vnc|close_vnc here; other
// features add theirs to app.actions.server, e.g. clone).
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { POWER_ACTIONS, SERVER_STATUSES, type PowerAction } from '../../domain/server-status.ts'
import type { Action } from '../../http/actions.ts'
import { bulkUpdateItems, createBodyHook, requireRelatedUuid } from '../../http/bodies.ts'
import { errors } from '../../http/errors.ts'
import { parseFields, pickFields } from '../../http/listing.ts'
import { describeResource } from '../../http/resource-schema.ts'
import { hypervisorView } from '../../hypervisor/view.ts'
import { AvailabilityGroup, AvailabilityGroups, FIELDS_DESCRIPTION, ListQuery, UuidParams, errorResponses, refTo, ResourceSchema } from '../../http/schemas.ts'
import { getServerWireSql, readServers } from './read-sql.ts'
import {
  CPU_TYPES, DEVICES, Server, ServerActionQuery, ServerActionResult, ServerBulkUpdateBody, ServerCreateBody, ServerDeleteBody,
  ServerDeleteQuery, SERVER_FIELDS, ServerList, ServerObjects, ServerUpdateInput, serverSchemas
} from './schemas.ts'
import type { FastifyInstance } from 'fastify'
import type { HandlerSet } from '../../engine/types.ts'
import { parseAvoid } from '../../domain/avoid.ts'
import { serverStartHandler } from './handlers/server-start.ts'
import { serverStopHandler } from './handlers/server-stop.ts'
import {
  EXTRA_DEFAULTS, createServers, deleteServer, deleteServers, loadServerWire, requestPowerAction, serverAvailabilityGroup,
  serverAvailabilityGroups, updateServer, updateServers
} from './service.ts'

const TAGS = ['servers']

// ---------------------------------------------------------------------------------------------
// This feature's ?do= actions, made afresh for each app and registered into its server actions
// by the plugin below (no module-level table)

function serverActions (): Record<string, Action> {
  const actions: Record<string, Action> = {}
  for (const name of POWER_ACTIONS) {
    actions[name] = {
      summary: `${name}: 202 {"action", "result": "success", "uuid"}; a ${name === 'start' ? 'server_start' : 'server_stop'} job carries it out`,
      result: refTo(ServerActionResult),
      run: async ({ app, ownerId, uuid, query }) => {
        if (name === 'start') parseAvoid(query.avoid)
        await requestPowerAction(app.prisma, ownerId, uuid, name as PowerAction)
        return { action: name, result: 'success', uuid }
      }
    }
  }

  // VNC is recorded by the driver; a running server is needed, as on CloudSigma
  for (const name of ['open_vnc', 'close_vnc'] as const) {
    actions[name] = {
      summary: `${name}: 202 {"action", "result", "uuid"${name === 'open_vnc' ? ', "vnc_url"' : ''}} on a running server`,
      result: refTo(ServerActionResult),
      run: async ({ app, ownerId, uuid }) => {
        const server = await hypervisorView(app.prisma, uuid)
        if (!server || server.ownerId !== ownerId) throw errors.notFound(`Server ${uuid}`, 'uuid')
        if (server.status !== 'running') throw errors.wrongState(`Cannot ${name} a server that is ${server.status}; it must be running`)
        if (name === 'close_vnc') {
          await app.hypervisor.closeVnc(server)
          return { action: name, result: 'success', uuid }
        }
        return { action: name, result: 'success', uuid, vnc_url: await app.hypervisor.openVnc(server) }
      }
    }
  }
  return actions
}

/** The server job handlers, for the engine (registered by app.ts). */
export function serverHandlers (app: FastifyInstance): HandlerSet {
  // read at call time, so a replaced driver takes effect for the next job
  const driver = () => app.hypervisor
  return { server_start: serverStartHandler(driver), server_stop: serverStopHandler(driver) }
}

// ---------------------------------------------------------------------------------------------

const servers: FastifyPluginAsyncTypebox = async (app) => {
  for (const s of serverSchemas) app.addSchema(s)
  for (const [name, action] of Object.entries(serverActions())) app.actions.server.register(name, action)
  app.events.registerLoader('servers', (p, ownerId, id) => loadServerWire(p, ownerId, id))

  const listSchema = (summary: string) => ({
    tags: TAGS,
    summary,
    description: 'Filters: name, name__contains, uuid, tag, status (comma = OR). order_by: name (default), uuid, status, cpu, mem.',
    querystring: ListQuery,
    response: { 200: refTo(ServerList), ...errorResponses() }
  })

  app.get('/servers/', { schema: listSchema('List servers (name, owner, resource_uri, runtime, status, uuid)') },
    async (request) => readServers(app.dbPool, app.prisma, request.account.id, request.query, false) as never)

  app.get('/servers/detail/', { schema: listSchema('List servers with all fields') },
    async (request) => readServers(app.dbPool, app.prisma, request.account.id, request.query, true) as never)

  app.get('/servers/schema/', { schema: { tags: TAGS, summary: 'The server resource schema', response: { 200: refTo(ResourceSchema), ...errorResponses() } } }, async () => describeResource(Server, {
    readonly: ['jobs', 'owner', 'resource_uri', 'runtime', 'status', 'uuid'],
    required: ['cpu', 'mem', 'name', 'vnc_password'],
    filtering: { name: 'exact', name__contains: 'exact', status: 'exact', tag: 'exact', uuid: 'exact' },
    ordering: ['name', 'uuid', 'status', 'cpu', 'mem'],
    detailMethods: ['get', 'put', 'delete'],
    listMethods: ['get', 'put', 'delete', 'post'],
    defaults: { ...EXTRA_DEFAULTS, drives: [], meta: {}, nics: [], smp: 1, tags: [] },
    choices: { cpu_model: ['kvm64'], cpu_type: CPU_TYPES, status: SERVER_STATUSES, device: DEVICES }
  }))

  // static paths: the router takes them before /servers/{uuid}/
  const placementNote = 'Compute hosts: only servers that are on one appear (starting, running, stopping, paused); a stopped server is on none. ' +
    'The built-in hypervisor driver runs no guests (this service is a control plane), so every running server of the account shares its one host: one group, ' +
    'and `start&avoid=` cannot place a server elsewhere. A driver that knows its hosts reports them (HypervisorDriver.hosts). Only the caller\'s servers appear.'
  app.get('/servers/availability_groups/', {
    schema: {
      tags: TAGS,
      summary: 'The caller\'s running servers grouped by the compute host they share: an array of arrays of server uuids',
      description: placementNote,
      response: { 200: refTo(AvailabilityGroups), ...errorResponses() }
    }
  }, async (request) => serverAvailabilityGroups(app.prisma, app.hypervisor, request.account.id))

  app.get('/servers/availability_groups/:uuid/', {
    schema: {
      tags: TAGS,
      summary: 'The servers on the same compute host as this one, itself included: a flat array of server uuids; [] when it is not running',
      description: placementNote + ' Another account\'s or an unknown server is 404.',
      params: UuidParams,
      response: { 200: refTo(AvailabilityGroup), ...errorResponses(404) }
    }
  }, async (request) => serverAvailabilityGroup(app.prisma, app.hypervisor, request.account.id, request.params.uuid))

  app.post('/servers/', {
    preValidation: createBodyHook,
    schema: {
      tags: TAGS,
      summary: 'Create servers: a server, an array, or {"objects": [...]}; all or none',
      body: refTo(ServerCreateBody),
      response: { 201: refTo(ServerObjects), ...errorResponses(503) }
    }
  }, async (request, reply) => {
    const objects = await createServers(app.prisma, request.account.id, request.body.objects)
    // Location only when one object was made: a bulk create has no single new resource
    if (objects.length === 1) reply.header('location', objects[0].resource_uri)
    return reply.code(201).send({ objects } as never)
  })

  app.put('/servers/', {
    preValidation: createBodyHook,
    schema: {
      tags: TAGS,
      summary: 'Update several servers, all or none: {"objects": [server with uuid, ...]} (or a bare array); 200 {"objects": [updated servers]}',
      description: 'Each object is applied as PUT /servers/{uuid}/ would (a running server takes only name, meta and tags), in request order, in one transaction. ' +
        'An unknown or another account\'s server is 404, a server listed twice or an object without uuid 400; any error changes nothing.',
      body: refTo(ServerBulkUpdateBody),
      response: { 200: refTo(ServerObjects), ...errorResponses(404, 503) }
    }
  }, async (request) => {
    return { objects: await updateServers(app.prisma, request.account.id, bulkUpdateItems(request.body.objects, 'servers')) } as never
  })

  app.delete('/servers/', {
    preValidation: createBodyHook,
    schema: {
      tags: TAGS,
      summary: 'Delete several stopped servers, all or none; ?recurse=all_drives|disks|cdroms also deletes those attached drives',
      description: 'Body: {"objects": [{"uuid": ...}, ...]}, a bare array, or one {"uuid": ...}; an item may also be a uuid or a resource URI. ' +
        'Each server is deleted as DELETE /servers/{uuid}/ would, in one transaction: an unknown or another account\'s server (404), a running one (400 at status) ' +
        'or a busy one (503) deletes nothing.',
      querystring: ServerDeleteQuery,
      body: refTo(ServerDeleteBody),
      response: { 204: Type.Null({ description: 'Deleted' }), ...errorResponses(404, 503) }
    }
  }, async (request, reply) => {
    const ids = request.body.objects.map(o => requireRelatedUuid(o, 'uuid', 'servers'))
    await deleteServers(app.prisma, request.account.id, ids, request.query.recurse)
    return reply.code(204).send(null)
  })

  app.get('/servers/:uuid/', {
    schema: {
      tags: TAGS,
      summary: 'One server',
      params: UuidParams,
      querystring: Type.Object({ fields: Type.Optional(Type.String({ description: FIELDS_DESCRIPTION })) }, { additionalProperties: true }),
      response: { 200: refTo(Server), ...errorResponses(404) }
    }
  }, async (request) => {
    const fields = parseFields(request.query.fields, SERVER_FIELDS)
    const server = await getServerWireSql(app.dbPool, request.account.id, request.params.uuid)
    if (!server) throw errors.notFound('Server', 'uuid')
    return pickFields(server, fields) as never
  })

  app.put('/servers/:uuid/', {
    schema: {
      tags: TAGS,
      summary: 'Update a server (§3.4); a drives list replaces the mounts; a running server takes only name, meta and tags',
      params: UuidParams,
      body: refTo(ServerUpdateInput),
      response: { 200: refTo(Server), ...errorResponses(404, 503) }
    }
  }, async (request) => updateServer(app.prisma, request.account.id, request.params.uuid, request.body) as never)

  app.delete('/servers/:uuid/', {
    schema: {
      tags: TAGS,
      summary: 'Delete a stopped server; ?recurse=all_drives|disks|cdroms also deletes those attached drives',
      params: UuidParams,
      querystring: ServerDeleteQuery,
      response: { 204: Type.Null({ description: 'Deleted' }), ...errorResponses(404, 503) }
    }
  }, async (request, reply) => {
    await deleteServer(app.prisma, request.account.id, request.params.uuid, request.query.recurse)
    return reply.code(204).send(null)
  })

  app.post('/servers/:uuid/action/', {
    schema: {
      tags: TAGS,
      summary: 'An action on a server, chosen by ?do=',
      description: 'start (stopped → starting → running), stop and shutdown (running → stopping → stopped): 202 {"action", "result": "success", "uuid"}. open_vnc adds vnc_url. Other actions are documented with their feature.',
      params: UuidParams,
      querystring: ServerActionQuery,
      response: { 202: Type.Unknown({ description: 'Depends on the action; see ServerActionResult for power actions' }), ...errorResponses(404, 503) }
    }
  }, async (request, reply) => app.actions.server.dispatch(app, request, reply) as never)
}

export default servers
