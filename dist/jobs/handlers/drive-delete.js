import { announceDrives, restingStatusOf } from "../../services/drives.js";
import { JobFailure } from "../types.js";
import { driveJobParams } from "./drive-params.js";
export function driveDeleteHandler(storage) {
    return {
        resumable: true,
        async run(ctx) {
            const { driveId } = driveJobParams(ctx, false);
            const drive = await ctx.prisma.drive.findUnique({ where: { id: driveId } });
            if (drive && drive.lockedByJob !== ctx.job.id)
                throw new JobFailure('the drive is no longer held by this job');
            await storage.delete(driveId);
            await ctx.prisma.drive.deleteMany({ where: { id: driveId, lockedByJob: ctx.job.id } });
            return null;
        },
        async cleanup(ctx) {
            const { driveId } = driveJobParams(ctx, false);
            const drive = await ctx.prisma.drive.findUnique({ where: { id: driveId } });
            if (!drive || drive.lockedByJob !== ctx.job.id)
                return;
            const intact = await storage.exists(driveId).catch(() => false);
            await ctx.prisma.$transaction(async (tx) => {
                if (intact) {
                    const status = await restingStatusOf(tx, driveId);
                    await tx.drive.updateMany({ where: { id: driveId, lockedByJob: ctx.job.id }, data: { deleted: false, status, lockedByJob: null } });
                }
                else {
                    await tx.drive.deleteMany({ where: { id: driveId, lockedByJob: ctx.job.id } });
                }
                await announceDrives(tx, ctx.job.ownerId, [driveId]);
            });
        }
    };
}
//# sourceMappingURL=drive-delete.js.map