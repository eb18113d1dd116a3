// Clone naming (spec §2.10): the name a clone gets when the request gives none, by the account's
// `clone_naming` strategy.
export const CLONE_NAMING = ['NONE', 'COUNTER', 'DATE', 'TIMESTAMP'];
const pad = (n) => String(n).padStart(2, '0');
const dateOf = (d) => `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
const timestampOf = (d) => `${dateOf(d)} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
const TRAILING_COUNTER = /^(.*)_(\d+)$/;
const TRAILING_TIMESTAMP = /^(.*)-(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})$/;
const TRAILING_DATE = /^(.*)-(\d{4}-\d{2}-\d{2})$/;
/** `x` → `x_1`, `x_1` → `x_2`: append `_1` or increment a trailing `_N`. */
export function nextCounter(name) {
    const m = TRAILING_COUNTER.exec(name);
    return m ? `${m[1]}_${Number(m[2]) + 1}` : `${name}_1`;
}
/**
 * Appends (or replaces) a date or timestamp suffix. When the name already ends with the current
 * one, falls back to a counter on top of it, keeping the date or timestamp.
 */
function stamped(name, stamp, pattern) {
    // a counter on top of a current stamp: `x-2026-11-23_1` → `x-2026-11-23_2`
    const counted = TRAILING_COUNTER.exec(name);
    if (counted) {
        const inner = pattern.exec(counted[1]);
        if (inner && inner[2] === stamp)
            return nextCounter(name);
    }
    const m = pattern.exec(name);
    if (m)
        return m[2] === stamp ? `${name}_1` : `${m[1]}-${stamp}`;
    return `${name}-${stamp}`;
}
export function cloneName(source, strategy, now = new Date()) {
    switch (strategy) {
        case 'COUNTER': return nextCounter(source);
        case 'DATE': return stamped(source, dateOf(now), TRAILING_DATE);
        case 'TIMESTAMP': return stamped(source, timestampOf(now), TRAILING_TIMESTAMP);
        default: return source;
    }
}
//# sourceMappingURL=naming.js.map