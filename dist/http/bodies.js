import { errors } from "./errors.js";
/** `{"objects":[...]}`, a bare array or a bare object all become `{objects: [...]}`. */
export function normalizeCreateBody(body) {
    if (Array.isArray(body))
        return { objects: body };
    if (body !== null && typeof body === 'object') {
        const objects = body.objects;
        if (Array.isArray(objects))
            return { objects };
        return { objects: [body] };
    }
    throw errors.validation('The request body must be a JSON object or array');
}
/** preValidation hook for create routes, so the body schema only has to describe one form. */
export async function createBodyHook(request) {
    request.body = normalizeCreateBody(request.body);
}
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const URI = /^(?:https?:\/\/[^/]+)?\/api\/2\.0\/([a-z_]+)\/([0-9a-fA-F-]{36})\/?$/;
/**
 * The uuid a related-field input refers to: a bare uuid, a `/api/2.0/<res>/<uuid>/` URI, or an
 * object with `uuid` or `resource_uri`. Returns undefined when the input is none of these.
 */
export function relatedUuid(input, resource) {
    if (typeof input === 'string') {
        if (UUID.test(input))
            return input.toLowerCase();
        const m = URI.exec(input);
        if (m && (!resource || m[1] === resource) && UUID.test(m[2]))
            return m[2].toLowerCase();
        return undefined;
    }
    if (input !== null && typeof input === 'object') {
        const o = input;
        if (typeof o.uuid === 'string')
            return relatedUuid(o.uuid, resource);
        if (typeof o.resource_uri === 'string')
            return relatedUuid(o.resource_uri, resource);
    }
    return undefined;
}
export function requireRelatedUuid(input, point, resource) {
    const id = relatedUuid(input, resource);
    if (!id)
        throw errors.validation(`${point} must be a uuid, a resource URI or an object with a uuid`, point);
    return id;
}
/** Tag references (uuids, URIs or objects) → their distinct uuids, in order; 400 at `tags` otherwise. */
export function tagIds(tags) {
    return [...new Set(tags.map(t => requireRelatedUuid(t, 'tags', 'tags')))];
}
export function isUuid(value) {
    return UUID.test(value);
}
//# sourceMappingURL=bodies.js.map