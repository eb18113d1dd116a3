// server_clone: the parent of one drive_clone per disk. The engine runs it once every child has
// finished: when all succeeded, the new server is released (its cloned disks are already mounted);
// when one failed or was cancelled, the cleanup removes the new server and every drive it created
// (the children clean up their own destinations first; this catches the ones that had finished).
import { announceDrives } from '../../drives/service.ts'
import { recordImageRemovals, removeRecordedImages } from '../../drives/image-removals.ts'
import { publishChange } from '../../../engine/events.ts'
import { detachAll } from '../../servers/mounts.ts'
import type { DriveStorage } from '../../../storage/index.ts'
import { IncompleteParams, JobFailure, type JobContext, type JobHandler } from '../../../engine/types.ts'
import { releaseSource } from './drive-clone.ts'

export interface ServerCloneParams {
  sourceServerId: string
  serverId: string
  disks: Array<{ sourceId: string, driveId: string, jobId: string }>
}

export function serverCloneParams (ctx: JobContext): ServerCloneParams {
  const p = ctx.job.params as Partial<ServerCloneParams>
  if (typeof p.serverId !== 'string' || typeof p.sourceServerId !== 'string' || !Array.isArray(p.disks)) {
    throw new IncompleteParams()
  }
  return { sourceServerId: p.sourceServerId, serverId: p.serverId, disks: p.disks }
}

export function serverCloneHandler (storage: () => DriveStorage): JobHandler {
  return {
    resumable: true,
    async run (ctx) {
      const p = serverCloneParams(ctx)
      // fenced by this attempt: a stale one gets LeaseLost and releases nothing
      const released = await ctx.fenced(async (tx) => {
        const r = await tx.server.updateMany({ where: { id: p.serverId, lockedByJob: ctx.job.id }, data: { lockedByJob: null } })
        await publishChange(tx, { ownerId: ctx.job.ownerId, resourceType: 'servers', resourceId: p.serverId })
        return r.count
      }, { last: true })
      if (released === 0) {
        const server = await ctx.prisma.server.findUnique({ where: { id: p.serverId }, select: { lockedByJob: true } })
        if (!server || server.lockedByJob !== null) throw new JobFailure(`the new server ${p.serverId} is no longer held by this job`)
      }
      ctx.progress({ description: `cloned server ${p.sourceServerId} as ${p.serverId} (${p.disks.length} disk${p.disks.length === 1 ? '' : 's'})` })
      return { server: p.serverId, drives: p.disks.map(d => d.driveId) }
    },
    async cleanup (ctx) {
      const p = serverCloneParams(ctx)
      const ownerId = ctx.job.ownerId
      const childJobs = new Set(p.disks.map(d => d.jobId))
      const ids = p.disks.map(d => d.driveId)
      // Rows first, in this attempt's fenced transaction (`last`): a stale attempt (taken over since
      // the engine checked its fence) gets LeaseLost there and so deletes no image either. The images
      // are recorded for removal there and go after that commit: those of the drives it deleted, and
      // those whose row was already gone (an image without its drive row is nobody's); a delete that
      // fails (or a process that dies first) is retried by the sweeper, so nothing half-made is left.
      const doomed = await ctx.fenced(async (tx) => {
        const mountedHere = new Set((await tx.serverDrive.findMany({ where: { serverId: p.serverId, driveId: { in: ids } }, select: { driveId: true } })).map(m => m.driveId))
        const rows = await tx.drive.findMany({ where: { id: { in: ids } }, select: { id: true, lockedByJob: true, deleted: true } })
        const gone = ids.filter(id => !rows.some(r => r.id === id))
        // ours: still held by its drive_clone child, or finished and still on the new server
        const ours = rows.filter(r => !r.deleted && ((r.lockedByJob !== null && childJobs.has(r.lockedByJob)) || (r.lockedByJob === null && mountedHere.has(r.id)))).map(r => r.id)
        const server = await tx.server.findUnique({ where: { id: p.serverId }, select: { lockedByJob: true } })
        if (server && server.lockedByJob === ctx.job.id) {
          // cdroms go back to unmounted when this was their only server
          await detachAll(tx, ownerId, p.serverId)
          await tx.server.delete({ where: { id: p.serverId } })
          await publishChange(tx, { ownerId, resourceType: 'servers', resourceId: p.serverId })
        }
        if (ours.length > 0) {
          await tx.drive.deleteMany({ where: { id: { in: ours }, OR: [{ lockedByJob: null }, { lockedByJob: { in: [...childJobs] } }] } })
        }
        const changed: string[] = [...ours]
        for (const d of p.disks) if (await releaseSource(tx, d.jobId, d.sourceId)) changed.push(d.sourceId)
        await announceDrives(tx, ownerId, changed)
        await recordImageRemovals(tx, [...ours, ...gone], 'server_clone cleanup')
        return [...ours, ...gone]
      }, { last: true })
      await removeRecordedImages({ prisma: ctx.prisma, storage: storage(), log: ctx.logger }, doomed)
    }
  }
}
