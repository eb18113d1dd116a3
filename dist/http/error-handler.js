import { ApiError, errors } from "./errors.js";
/** The field an ajv error is about: the missing property, or the last named segment of its path. */
export function errorPointOf(err) {
    if (err.keyword === 'required' && typeof err.params?.missingProperty === 'string')
        return err.params.missingProperty;
    if (err.keyword === 'additionalProperties' && typeof err.params?.additionalProperty === 'string')
        return err.params.additionalProperty;
    const segments = (err.instancePath ?? '').split('/').filter(s => s !== '' && !/^\d+$/.test(s) && s !== 'objects');
    return segments.at(-1) ?? null;
}
function fromValidation(error) {
    const first = (error.validation?.[0] ?? {});
    const point = errorPointOf(first);
    const where = error.validationContext === 'querystring' ? 'query parameter' : 'field';
    const message = point ? `Invalid ${where} ${point}: ${first.message ?? 'invalid value'}` : (first.message ?? error.message);
    return errors.validation(message, point);
}
export function toApiError(error) {
    if (error instanceof ApiError)
        return error;
    const fe = error;
    if (fe.validation)
        return fromValidation(fe);
    switch (fe.code) {
        case 'FST_ERR_CTP_INVALID_JSON_BODY':
        case 'FST_ERR_CTP_EMPTY_JSON_BODY':
            return errors.validation('Malformed JSON in the request body');
        case 'FST_ERR_CTP_BODY_TOO_LARGE':
            return errors.tooLarge('Request body is too large');
        case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
            return errors.unsupportedMediaType(fe.message.replace(/^Unsupported Media Type:?\s*/i, ''));
        case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
            return errors.validation('Request body size did not match Content-Length');
        case 'FST_REQ_FILE_TOO_LARGE':
        case 'FST_FILES_LIMIT':
        case 'FST_PARTS_LIMIT':
        case 'FST_FIELDS_LIMIT':
            return errors.tooLarge(fe.message);
        case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
            return errors.validation('The request is not multipart/form-data');
    }
    if (error instanceof SyntaxError)
        return errors.validation('Malformed JSON in the request body');
    const status = fe.statusCode ?? 500;
    if (status >= 400 && status < 500) {
        if (status === 404)
            return errors.notFound('Resource');
        if (status === 401)
            return errors.unauthorized();
        return new ApiError(status, 'validation', fe.message);
    }
    return errors.internal();
}
export function sendError(reply, error) {
    return reply.code(error.statusCode).headers(error.headers).type('application/json; charset=utf-8').send([error.toJSON()]);
}
export function installErrorHandler(app) {
    app.setErrorHandler((error, request, reply) => {
        const apiError = toApiError(error);
        if (apiError.statusCode >= 500) {
            // the real cause goes to the log only; the client sees a generic message
            request.log.error({ err: error }, 'request failed');
        }
        else {
            request.log.info({ error: apiError.toJSON(), status: apiError.statusCode }, 'request rejected');
        }
        return sendError(reply, apiError);
    });
    app.setNotFoundHandler((request, reply) => {
        return sendError(reply, errors.notFound('Resource'));
    });
}
//# sourceMappingURL=error-handler.js.map