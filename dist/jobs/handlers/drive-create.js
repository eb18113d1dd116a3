import { announceDrives, restingStatusOf } from "../../services/drives.js";
import { JobFailure } from "../types.js";
import { driveJobParams } from "./drive-params.js";
export function driveCreateHandler(storage) {
    return {
        // every step is idempotent, so a job taken over after a crash simply runs again
        resumable: true,
        async run(ctx) {
            const { driveId, size } = driveJobParams(ctx, true);
            const drive = await ctx.prisma.drive.findUnique({ where: { id: driveId } });
            if (!drive || drive.lockedByJob !== ctx.job.id)
                throw new JobFailure('the drive is no longer held by this job');
            if (await storage.exists(driveId))
                await storage.resize(driveId, size);
            else
                await storage.create(driveId, size);
            ctx.signal.throwIfAborted();
            await ctx.prisma.$transaction(async (tx) => {
                const status = await restingStatusOf(tx, driveId);
                const done = await tx.drive.updateMany({ where: { id: driveId, lockedByJob: ctx.job.id }, data: { status, lockedByJob: null } });
                if (done.count === 0)
                    throw new JobFailure('the drive is no longer held by this job');
                await announceDrives(tx, ctx.job.ownerId, [driveId]);
            });
            return { size };
        },
        async cleanup(ctx) {
            const { driveId } = driveJobParams(ctx, false);
            const drive = await ctx.prisma.drive.findUnique({ where: { id: driveId } });
            if (drive && drive.lockedByJob !== ctx.job.id)
                return;
            await storage.delete(driveId);
            await ctx.prisma.$transaction(async (tx) => {
                await tx.drive.deleteMany({ where: { id: driveId, lockedByJob: ctx.job.id } });
                await announceDrives(tx, ctx.job.ownerId, [driveId]);
            });
        }
    };
}
//# sourceMappingURL=drive-create.js.map