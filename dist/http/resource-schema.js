function typeName(s) {
    if (s.$ref)
        return s.$ref.startsWith('Ref') ? 'related' : 'dict';
    const types = (Array.isArray(s.type) ? s.type : [s.type]).filter(t => t && t !== 'null');
    if (s.anyOf) {
        const inner = s.anyOf.filter(a => a.type !== 'null');
        if (inner.length === 1)
            return typeName(inner[0]);
        if (inner.some(a => a.$ref?.startsWith('Ref')))
            return 'related';
        return 'string';
    }
    switch (types[0]) {
        case 'integer': return 'integer';
        case 'number': return 'integer';
        case 'boolean': return 'boolean';
        case 'array': return s.items?.$ref?.startsWith('Ref') ? 'related' : 'list';
        case 'object': return 'dict';
        default: return s.description?.includes('datetime') ? 'datetime' : 'string';
    }
}
function choicesOf(s) {
    if (s.enum)
        return s.enum;
    if (s.anyOf?.every(a => 'const' in a))
        return s.anyOf.map(a => a.const);
    return undefined;
}
export function describeResource(schema, opts) {
    const fields = {};
    const props = schema.properties ?? {};
    for (const [name, prop] of Object.entries(props)) {
        const choices = opts.choices?.[name] ?? choicesOf(prop);
        const defaultValue = opts.defaults && name in opts.defaults ? opts.defaults[name] : prop.default;
        fields[name] = {
            default: defaultValue === undefined ? 'No default provided.' : defaultValue,
            help_text: prop.description ?? '',
            readonly: opts.readonly.includes(name),
            required: opts.required.includes(name),
            type: typeName(prop),
            ...(choices ? { choices: [...choices] } : {})
        };
    }
    return {
        allowed_detail_http_methods: [...opts.detailMethods],
        allowed_list_http_methods: [...opts.listMethods],
        default_format: 'application/json',
        default_limit: 20,
        fields,
        filtering: opts.filtering,
        ordering: [...opts.ordering]
    };
}
//# sourceMappingURL=resource-schema.js.map