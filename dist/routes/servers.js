import { Type } from 'typebox';
import { POWER_ACTIONS, SERVER_STATUSES } from "../domain/server-status.js";
import { ActionRegistry } from "../http/actions.js";
import { createBodyHook } from "../http/bodies.js";
import { errors } from "../http/errors.js";
import { parseFields, pickFields } from "../http/listing.js";
import { describeResource } from "../http/resource-schema.js";
import { hypervisorView } from "../hypervisor/view.js";
import { ListQuery, UuidParams, errorResponses, refTo, ResourceSchema } from "../schemas/common.js";
import { CPU_TYPES, DEVICES, Server, ServerActionQuery, ServerCreateBody, ServerDeleteQuery, ServerList, ServerObjects, ServerUpdateInput, serverSchemas } from "../schemas/server.js";
import { parseAvoid } from "../services/drives.js";
import { EXTRA_DEFAULTS, createServers, deleteServer, listServers, loadServerWire, requestPowerAction, updateServer } from "../services/servers.js";
const TAGS = ['servers'];
const actions = new ActionRegistry('server');
/** Adds ?do=<name> to the server action dispatcher; call it once, at the top level of a module. */
export function registerServerAction(name, action) {
    actions.register(name, action);
}
for (const name of POWER_ACTIONS) {
    registerServerAction(name, {
        summary: `${name}: 202 {"action", "result": "success", "uuid"}; a ${name === 'start' ? 'server_start' : 'server_stop'} job carries it out`,
        run: async ({ app, ownerId, uuid, query }) => {
            if (name === 'start')
                parseAvoid(query.avoid);
            await requestPowerAction(app.prisma, ownerId, uuid, name);
            return { action: name, result: 'success', uuid };
        }
    });
}
// VNC is recorded by the driver; a running server is needed, as on CloudSigma
for (const name of ['open_vnc', 'close_vnc']) {
    registerServerAction(name, {
        summary: `${name}: 202 {"action", "result", "uuid"${name === 'open_vnc' ? ', "vnc_url"' : ''}} on a running server`,
        run: async ({ app, ownerId, uuid }) => {
            const server = await hypervisorView(app.prisma, uuid);
            if (!server || server.ownerId !== ownerId)
                throw errors.notFound('Server', 'uuid');
            if (server.status !== 'running')
                throw errors.wrongState(`Cannot ${name} a server that is ${server.status}; it must be running`);
            if (name === 'close_vnc') {
                await app.hypervisor.closeVnc(server);
                return { action: name, result: 'success', uuid };
            }
            return { action: name, result: 'success', uuid, vnc_url: await app.hypervisor.openVnc(server) };
        }
    });
}
// ---------------------------------------------------------------------------------------------
const servers = async (app) => {
    for (const s of serverSchemas)
        app.addSchema(s);
    const listSchema = (summary) => ({
        tags: TAGS,
        summary,
        description: 'Filters: name, name__contains, uuid, tag, status (comma = OR). order_by: name (default), uuid, status, cpu, mem.',
        querystring: ListQuery,
        response: { 200: refTo(ServerList), ...errorResponses() }
    });
    app.get('/servers/', { schema: listSchema('List servers (name, owner, resource_uri, runtime, status, uuid)') }, async (request) => listServers(app.prisma, request.account.id, request.query, false));
    app.get('/servers/detail/', { schema: listSchema('List servers with all fields') }, async (request) => listServers(app.prisma, request.account.id, request.query, true));
    app.get('/servers/schema/', { schema: { tags: TAGS, summary: 'The server resource schema', response: { 200: refTo(ResourceSchema), ...errorResponses() } } }, async () => describeResource(Server, {
        readonly: ['jobs', 'owner', 'resource_uri', 'runtime', 'status', 'uuid'],
        required: ['cpu', 'mem', 'name', 'vnc_password'],
        filtering: { name: 'exact', name__contains: 'exact', status: 'exact', tag: 'exact', uuid: 'exact' },
        ordering: ['name', 'uuid', 'status', 'cpu', 'mem'],
        detailMethods: ['get', 'put', 'delete'],
        listMethods: ['get', 'post'],
        defaults: { ...EXTRA_DEFAULTS, drives: [], meta: {}, nics: [], smp: 1, tags: [] },
        choices: { cpu_model: ['kvm64'], cpu_type: CPU_TYPES, status: SERVER_STATUSES, device: DEVICES }
    }));
    app.post('/servers/', {
        preValidation: createBodyHook,
        schema: {
            tags: TAGS,
            summary: 'Create servers: a server, an array, or {"objects": [...]}; all or none',
            body: refTo(ServerCreateBody),
            response: { 201: refTo(ServerObjects), ...errorResponses(503) }
        }
    }, async (request, reply) => {
        const objects = await createServers(app.prisma, request.account.id, request.body.objects);
        return reply.code(201).send({ objects });
    });
    app.get('/servers/:uuid/', {
        schema: {
            tags: TAGS,
            summary: 'One server',
            params: UuidParams,
            querystring: Type.Object({ fields: Type.Optional(Type.String()) }, { additionalProperties: true }),
            response: { 200: refTo(Server), ...errorResponses(404) }
        }
    }, async (request) => {
        const server = await loadServerWire(app.prisma, request.account.id, request.params.uuid);
        if (!server)
            throw errors.notFound('Server', 'uuid');
        return pickFields(server, parseFields(request.query.fields));
    });
    app.put('/servers/:uuid/', {
        schema: {
            tags: TAGS,
            summary: 'Update a server (§3.4); a drives list replaces the mounts; a running server takes only name, meta and tags',
            params: UuidParams,
            body: refTo(ServerUpdateInput),
            response: { 200: refTo(Server), ...errorResponses(404, 503) }
        }
    }, async (request) => updateServer(app.prisma, request.account.id, request.params.uuid, request.body));
    app.delete('/servers/:uuid/', {
        schema: {
            tags: TAGS,
            summary: 'Delete a stopped server; ?recurse=all_drives|disks|cdroms also deletes those attached drives',
            params: UuidParams,
            querystring: ServerDeleteQuery,
            response: { 204: Type.Null({ description: 'Deleted' }), ...errorResponses(404, 503) }
        }
    }, async (request, reply) => {
        await deleteServer(app.prisma, app.config, request.account.id, request.params.uuid, request.query.recurse);
        return reply.code(204).send(null);
    });
    app.post('/servers/:uuid/action/', {
        schema: {
            tags: TAGS,
            summary: 'An action on a server, chosen by ?do=',
            description: 'start (stopped → starting → running), stop and shutdown (running → stopping → stopped): 202 {"action", "result": "success", "uuid"}. open_vnc adds vnc_url. Other actions are documented with their feature.',
            params: UuidParams,
            querystring: ServerActionQuery,
            response: { 202: Type.Unknown({ description: 'Depends on the action; see ServerActionResult for power actions' }), ...errorResponses(404, 503) }
        }
    }, async (request, reply) => actions.dispatch(app, request, reply));
};
export default servers;
//# sourceMappingURL=servers.js.map