import { JobFailure } from "../types.js";
export function driveJobParams(ctx, needsSize) {
    const { driveId, size } = ctx.job.params;
    if (typeof driveId !== 'string' || (needsSize && typeof size !== 'number')) {
        throw new JobFailure('the job parameters are incomplete');
    }
    return { driveId, size: typeof size === 'number' ? size : 0 };
}
//# sourceMappingURL=drive-params.js.map