// The one error catalogue. Every error leaves the service as the CloudSigma array
// [{error_type, error_message, error_point}] (spec §1.13), with the status codes of §1.4.
export class ApiError extends Error {
    statusCode;
    errorType;
    errorPoint;
    headers;
    constructor(statusCode, errorType, message, errorPoint = null, headers = {}) {
        super(message);
        this.name = 'ApiError';
        this.statusCode = statusCode;
        this.errorType = errorType;
        this.errorPoint = errorPoint;
        this.headers = headers;
    }
    toJSON() {
        return { error_type: this.errorType, error_message: this.message, error_point: this.errorPoint };
    }
}
export const errors = {
    validation: (message, point = null) => new ApiError(400, 'validation', message, point),
    /** An operation the object's current status does not allow (decisions.md: 400 at `status`). */
    wrongState: (message) => new ApiError(400, 'validation', message, 'status'),
    unauthorized: (message = 'Authentication credentials were not provided or are wrong') => new ApiError(401, 'permission', message, null, { 'www-authenticate': 'Basic realm="clonejobs"' }),
    permission: (message, point = null) => new ApiError(403, 'permission', message, point),
    notFound: (what = 'Object', point = null) => new ApiError(404, 'notexist', `${what} does not exist`, point),
    methodNotAllowed: (method) => new ApiError(405, 'validation', `Method ${method} is not allowed here`),
    notAcceptable: () => new ApiError(406, 'validation', 'Only application/json responses can be produced'),
    gone: (message) => new ApiError(410, 'notexist', message),
    tooLarge: (message, point = null) => new ApiError(413, 'validation', message, point),
    unsupportedMediaType: (type) => new ApiError(415, 'validation', `Unsupported content type: ${type}`),
    rangeNotSatisfiable: (message, point = null) => new ApiError(416, 'validation', message, point),
    /** Another operation holds the resource; the client should retry (decisions.md: 503). */
    busy: (message, point = null) => new ApiError(503, 'concurrency', message, point),
    internal: () => new ApiError(500, 'backend', 'Internal server error')
};
//# sourceMappingURL=errors.js.map