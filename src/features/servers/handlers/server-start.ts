// server_start: stopped → starting (set by the request) → running, through the hypervisor driver.
// A failed or cancelled start puts the server back to stopped.
import type { HypervisorDriver } from '../../../hypervisor/driver.ts'
import { hypervisorView, type ServerView } from '../../../hypervisor/view.ts'
import { publishChange } from '../../../engine/events.ts'
import { IncompleteParams, JobFailure, type JobContext, type JobHandler } from '../../../engine/types.ts'

/** The server the job is for (its parameter `serverId`). */
function serverIdOf (ctx: JobContext): string {
  const id = ctx.job.params.serverId
  if (typeof id !== 'string') throw new IncompleteParams()
  return id
}

/** The server this job holds; fails the job when the server is gone or no longer held by it. */
export async function heldServer (ctx: JobContext): Promise<ServerView> {
  const id = serverIdOf(ctx)
  const server = await hypervisorView(ctx.prisma, id)
  if (!server || server.lockedByJob !== ctx.job.id) throw new JobFailure(`server ${id} is no longer waiting for this job`)
  return server
}

/**
 * Ends the job's hold on the server with the given status (only while the job still holds it),
 * fenced by the attempt: a stale one gets LeaseLost and writes nothing.
 */
export async function settleServer (ctx: JobContext, data: { status: string, activeSince?: Date | null }): Promise<void> {
  const id = serverIdOf(ctx)
  await ctx.fenced(async (tx) => {
    const n = await tx.server.updateMany({ where: { id, lockedByJob: ctx.job.id }, data: { ...data, lockedByJob: null } })
    if (n.count > 0) await publishChange(tx, { ownerId: ctx.job.ownerId, resourceType: 'servers', resourceId: id })
  }, { last: true })
}

export function serverStartHandler (driver: () => HypervisorDriver): JobHandler {
  return {
    // driver.start is idempotent, so a job taken over after a crash simply starts again
    resumable: true,
    async run (ctx) {
      const server = await heldServer(ctx)
      ctx.progress({ description: `starting ${server.name}` })
      const result = await driver().start(server, ctx.signal)
      ctx.signal.throwIfAborted()
      await settleServer(ctx, { status: 'running', activeSince: result.activeSince ?? new Date() })
      ctx.progress({ description: `started ${server.name}` })
      return { status: 'running' }
    },
    async cleanup (ctx) {
      await settleServer(ctx, { status: 'stopped', activeSince: null })
    }
  }
}
