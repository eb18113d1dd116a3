import { errors } from "./errors.js";
export class ActionRegistry {
    resource;
    actions = new Map();
    constructor(resource) {
        this.resource = resource;
    }
    register(name, action) {
        if (this.actions.has(name))
            throw new Error(`${this.resource} action ${name} is registered already`);
        this.actions.set(name, action);
    }
    get(name) {
        return this.actions.get(name);
    }
    names() {
        return [...this.actions.keys()].sort();
    }
    /** Runs `?do=<name>` for the route's `:uuid`: unknown names are 400 at `do`, bad bodies 400. */
    async dispatch(app, request, reply) {
        // the route's schema guarantees a uuid param and a `do` query parameter
        const { uuid } = request.params;
        const query = request.query;
        const name = query.do;
        const action = this.actions.get(name);
        if (!action)
            throw errors.validation(`Unknown action ${JSON.stringify(name)}; one of: ${this.names().join(', ')}`, 'do');
        const body = request.body ?? {};
        if (action.body) {
            const validate = request.compileValidationSchema(action.body, 'body');
            if (!validate(body)) {
                const err = Object.assign(new Error('invalid body'), { code: 'FST_ERR_VALIDATION', validation: validate.errors ?? [], validationContext: 'body' });
                throw err;
            }
        }
        reply.code(202);
        return action.run({ app, request, reply, ownerId: request.account.id, uuid, body, query });
    }
}
//# sourceMappingURL=actions.js.map