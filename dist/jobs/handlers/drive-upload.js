import { chunkCount } from "../../domain/chunks.js";
import { discardUpload, finishUploadedDrive, hashDrive } from "../../services/transfers.js";
import { JobFailure } from "../types.js";
function params(raw) {
    const { driveId, mode, size, chunkSize } = raw;
    if (typeof driveId !== 'string' || typeof mode !== 'string')
        throw new JobFailure('the job parameters are incomplete');
    return { driveId, mode, size: typeof size === 'number' ? size : undefined, chunkSize: typeof chunkSize === 'number' ? chunkSize : undefined };
}
export function driveUploadHandler(storage) {
    return {
        // a chunked upload taken over mid-verification simply verifies again
        resumable: true,
        async run(ctx) {
            const p = params(ctx.job.params);
            if (p.mode !== 'chunked')
                throw new JobFailure('the upload was interrupted: the process receiving it stopped');
            const drive = await ctx.prisma.drive.findUnique({ where: { id: p.driveId } });
            if (!drive || drive.lockedByJob !== ctx.job.id || drive.status !== 'uploading')
                throw new JobFailure('the drive is no longer held by this upload');
            const size = Number(drive.size);
            const stored = await ctx.prisma.uploadChunk.count({ where: { driveId: p.driveId } });
            const total = p.chunkSize ? chunkCount(size, p.chunkSize) : Infinity;
            if (stored < total) {
                throw new JobFailure(`the upload was abandoned: ${stored} of ${Number.isFinite(total) ? total : '?'} chunks arrived`, 'validation');
            }
            ctx.progress({ description: 'all chunks received; computing the SHA-256 of the image' });
            const { sha256, bytes } = await hashDrive(storage, p.driveId, ctx.signal);
            ctx.signal.throwIfAborted();
            await ctx.prisma.$transaction(async (tx) => finishUploadedDrive(tx, ctx.job.ownerId, p.driveId, ctx.job.id));
            return { sha256, bytes };
        },
        async cleanup(ctx) {
            const p = params(ctx.job.params);
            await discardUpload(ctx.prisma, storage, ctx.job.ownerId, p.driveId, ctx.job.id);
        }
    };
}
//# sourceMappingURL=drive-upload.js.map