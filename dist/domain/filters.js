// CloudSigma list filters (spec §1.8), as pure functions: parameters AND, repeated parameters AND,
// comma-separated alternatives OR, with `\,` for a literal comma and `\\` for a backslash.
/** Splits one filter value into its OR-ed alternatives, honouring `\,` and `\\` escapes. */
export function splitAlternatives(value) {
    const out = [];
    let current = '';
    for (let i = 0; i < value.length; i++) {
        const ch = value[i];
        if (ch === '\\' && i + 1 < value.length && (value[i + 1] === ',' || value[i + 1] === '\\')) {
            current += value[i + 1];
            i++;
        }
        else if (ch === ',') {
            out.push(current);
            current = '';
        }
        else {
            current += ch;
        }
    }
    out.push(current);
    return out;
}
export class FilterError extends Error {
    param;
    name = 'FilterError';
    constructor(param, message) {
        super(message);
        this.param = param;
    }
}
const OPS = ['contains', 'lt', 'lte', 'gt', 'gte'];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
function splitParam(key) {
    const at = key.lastIndexOf('__');
    if (at > 0) {
        const suffix = key.slice(at + 2);
        const op = suffix === 'icontains' ? 'contains' : suffix;
        if (OPS.includes(op))
            return { name: key.slice(0, at), op: op };
    }
    return { name: key, op: 'exact' };
}
/**
 * Reads the filters a resource declares out of a parsed query string. Parameters the spec does
 * not declare are ignored (they are paging, `fields`, `format`, ...).
 */
export function parseFilters(query, spec) {
    const conditions = [];
    for (const [key, raw] of Object.entries(query)) {
        const { name, op } = splitParam(key);
        const field = spec[name];
        if (!field)
            continue;
        const comparable = field.kind === 'date' || field.kind === 'int';
        if ((op === 'contains' && field.kind !== 'string') || (['lt', 'lte', 'gt', 'gte'].includes(op) && !comparable)) {
            throw new FilterError(key, `Filter ${key} is not supported`);
        }
        for (const occurrence of Array.isArray(raw) ? raw : [raw]) {
            const values = splitAlternatives(String(occurrence));
            for (const v of values)
                validateValue(key, field, v);
            conditions.push({ param: key, field, op, values });
        }
    }
    return conditions;
}
function validateValue(param, field, value) {
    if (field.kind === 'uuid' && !UUID.test(value))
        throw new FilterError(param, `Filter ${param}: ${JSON.stringify(value)} is not a uuid`);
    if (field.kind === 'date' && Number.isNaN(Date.parse(value)))
        throw new FilterError(param, `Filter ${param}: ${JSON.stringify(value)} is not a date`);
    if (field.kind === 'int' && !/^-?\d+$/.test(value))
        throw new FilterError(param, `Filter ${param}: ${JSON.stringify(value)} is not an integer`);
    if (field.choices && !field.choices.includes(value)) {
        throw new FilterError(param, `Filter ${param}: ${JSON.stringify(value)} is not one of ${field.choices.join(', ')}`);
    }
}
function clause(field, op, value) {
    if (field.build)
        return field.build(value, op);
    const v = field.kind === 'date' ? new Date(value) : field.kind === 'int' ? BigInt(value) : field.kind === 'uuid' ? value.toLowerCase() : value;
    switch (op) {
        case 'exact':
            return field.kind === 'array' ? { [field.column]: { has: v } } : { [field.column]: { equals: v } };
        case 'contains':
            return { [field.column]: { contains: value, mode: 'insensitive' } };
        default:
            return { [field.column]: { [op]: v } };
    }
}
/** A Prisma `where` for the conditions: AND across conditions, OR across alternatives. */
export function filtersToWhere(conditions) {
    if (conditions.length === 0)
        return {};
    return {
        AND: conditions.map(c => c.values.length === 1
            ? clause(c.field, c.op, c.values[0])
            : { OR: c.values.map(v => clause(c.field, c.op, v)) })
    };
}
export class OrderError extends Error {
    name = 'OrderError';
}
/** Parses `order_by` (comma list, `-` for descending) into a Prisma orderBy, with a stable tiebreak. */
export function parseOrder(raw, spec, tiebreak = 'id') {
    const text = typeof raw === 'string' && raw !== '' ? raw : spec.default;
    const out = [];
    for (const part of text.split(',').map(s => s.trim()).filter(Boolean)) {
        const desc = part.startsWith('-');
        const name = desc ? part.slice(1) : part;
        const column = spec.fields[name];
        if (!column)
            throw new OrderError(`order_by: cannot order by ${JSON.stringify(name)}; allowed: ${Object.keys(spec.fields).join(', ')}`);
        out.push({ [column]: desc ? 'desc' : 'asc' });
    }
    if (!out.some(o => tiebreak in o))
        out.push({ [tiebreak]: out.at(-1)?.[Object.keys(out.at(-1) ?? {})[0]] ?? 'asc' });
    return out;
}
//# sourceMappingURL=filters.js.map