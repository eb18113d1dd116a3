// Job progress as pure functions: the percent/ETA of one job from its bytes, and the
// byte-weighted roll-up of a job tree (a parent's progress comes from its children).
/** Percent 0-99 from bytes (100 is only ever set on success), or undefined without a total. */
export function percentOf(bytesDone, bytesTotal) {
    if (!bytesTotal || bytesTotal <= 0)
        return undefined;
    return Math.max(0, Math.min(99, Math.floor(bytesDone * 100 / bytesTotal)));
}
/** Seconds left at the average rate so far; undefined until there is a rate worth extrapolating. */
export function etaOf(bytesDone, bytesTotal, elapsedSeconds) {
    if (!bytesTotal || bytesDone <= 0 || elapsedSeconds < 0.5 || bytesDone >= bytesTotal)
        return undefined;
    return Math.round(elapsedSeconds * (bytesTotal - bytesDone) / bytesDone);
}
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
export function formatBytes(n) {
    if (n >= GiB)
        return `${(n / GiB).toFixed(1)} GiB`;
    if (n >= MiB)
        return `${(n / MiB).toFixed(1)} MiB`;
    return `${n} B`;
}
const FINISHED = new Set(['success', 'error', 'cancelled']);
/**
 * A job's own progress, or for a parent the byte-weighted aggregate of its children (recursively):
 * bytes add up; children without a known size count by their percent with equal weight.
 * Only a successful job shows 100.
 */
export function rollUp(node) {
    if (node.children.length === 0) {
        return {
            progress: node.state === 'success' ? 100 : Math.min(99, node.progress),
            bytesDone: node.state === 'success' && node.bytesTotal !== null ? node.bytesTotal : node.bytesDone,
            bytesTotal: node.bytesTotal,
            etaSeconds: FINISHED.has(node.state) ? null : node.etaSeconds,
            description: node.description
        };
    }
    const parts = node.children.map(rollUp);
    const sized = parts.filter(p => p.bytesTotal !== null && p.bytesTotal > 0);
    const bytesTotal = sized.length > 0 ? sized.reduce((s, p) => s + p.bytesTotal, 0) : null;
    const bytesDone = parts.reduce((s, p) => s + p.bytesDone, 0);
    let fraction;
    if (sized.length === parts.length && bytesTotal) {
        fraction = bytesDone / bytesTotal;
    }
    else {
        // mixed or unknown sizes: each child weighs its share of the known bytes, or 1/n
        fraction = parts.reduce((s, p) => s + p.progress / 100, 0) / parts.length;
    }
    const done = node.children.filter(c => c.state === 'success').length;
    const etas = parts.map(p => p.etaSeconds).filter((e) => e !== null);
    return {
        progress: node.state === 'success' ? 100 : Math.max(0, Math.min(99, Math.floor(fraction * 100))),
        bytesDone,
        bytesTotal,
        // children run in parallel: the tree is done when its slowest child is
        etaSeconds: FINISHED.has(node.state) || etas.length === 0 ? null : Math.max(...etas),
        description: node.description ?? (bytesTotal
            ? `${done} of ${parts.length} parts done, ${formatBytes(bytesDone)} of ${formatBytes(bytesTotal)}`
            : `${done} of ${parts.length} parts done`)
    };
}
//# sourceMappingURL=progress.js.map