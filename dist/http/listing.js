// List conventions shared by every collection: paging (§1.6), `fields=` (§1.7), filters (§1.8),
// `order_by` (§1.9) and the `{meta, objects}` envelope (§1.5).
import { errors } from "./errors.js";
import { FilterError, OrderError, filtersToWhere, parseFilters, parseOrder } from "../domain/filters.js";
export const DEFAULT_LIMIT = 20;
export function planList(query, filters, order) {
    const limit = query.limit ?? DEFAULT_LIMIT;
    const offset = query.offset ?? 0;
    let where;
    let orderBy;
    try {
        where = filtersToWhere(parseFilters(query, filters));
    }
    catch (err) {
        if (err instanceof FilterError)
            throw errors.validation(err.message, err.param);
        throw err;
    }
    try {
        orderBy = parseOrder(query.order_by, order);
    }
    catch (err) {
        if (err instanceof OrderError)
            throw errors.validation(err.message, 'order_by');
        throw err;
    }
    return { limit, offset, take: limit === 0 ? undefined : limit, where, orderBy, fields: parseFields(query.fields) };
}
export function parseFields(raw) {
    if (typeof raw !== 'string' || raw.trim() === '')
        return undefined;
    return raw.split(',').map(s => s.trim()).filter(Boolean);
}
/** Keeps only the requested keys of a wire object (`fields=uuid,status`). */
export function pickFields(obj, fields) {
    if (!fields)
        return obj;
    const out = {};
    for (const f of fields)
        if (f in obj)
            out[f] = obj[f];
    return out;
}
export function envelope(plan, total, objects) {
    return {
        meta: { limit: plan.limit, offset: plan.offset, total_count: total },
        objects: objects.map(o => pickFields(o, plan.fields))
    };
}
//# sourceMappingURL=listing.js.map