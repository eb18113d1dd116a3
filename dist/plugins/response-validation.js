// Test mode: every JSON response is validated against the schema its route declares for that
// status code, so the OpenAPI document cannot drift from what the service really answers.
// (Fastify's serializer alone would silently drop or coerce mismatching fields.)
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import fp from 'fastify-plugin';
export default fp(async (app, opts) => {
    // one validator per encapsulation context: route plugins add their own shared schemas
    const validators = new WeakMap();
    const compiled = new WeakMap();
    const compile = (context, schema) => {
        let ajv = validators.get(context);
        if (!ajv) {
            ajv = new Ajv({ strict: false, allErrors: true, validateFormats: true });
            addFormats.default(ajv);
            for (const s of Object.values(context.getSchemas()))
                ajv.addSchema(s);
            validators.set(context, ajv);
        }
        let validate = compiled.get(schema);
        if (!validate) {
            validate = ajv.compile(schema);
            compiled.set(schema, validate);
        }
        return { validate, ajv };
    };
    app.addHook('preSerialization', async function (request, reply, payload) {
        const responses = request.routeOptions.schema?.response;
        if (!responses)
            return payload;
        const code = String(reply.statusCode);
        const schema = responses[code] ?? responses[`${code[0]}xx`] ?? responses.default;
        const where = `${request.method} ${request.routeOptions.url} answered ${code}`;
        if (!schema) {
            opts.onViolation(`${where}, which its schema does not declare`);
            return payload;
        }
        const { validate, ajv } = compile(this, schema);
        // validate what the client would receive: JSON, without undefined values
        if (!validate(JSON.parse(JSON.stringify(payload)))) {
            opts.onViolation(`${where}, which does not match its schema: ${ajv.errorsText(validate.errors)}`);
        }
        return payload;
    });
}, { name: 'response-validation' });
//# sourceMappingURL=response-validation.js.map