// resource_uri and reference objects (§1.12).
export const API = '/api/2.0';
export function uri(resource, id) {
    return `${API}/${resource}/${id}/`;
}
export function ref(resource, id) {
    return { resource_uri: uri(resource, id), uuid: id };
}
/** CloudSigma timestamps: ISO 8601 with microseconds and `+00:00`. */
export function isoTime(d) {
    if (!d)
        return null;
    return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000+00:00');
}
//# sourceMappingURL=uris.js.map