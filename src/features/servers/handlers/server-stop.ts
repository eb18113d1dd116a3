// server_stop, for ?do=stop (hard power-off) and ?do=shutdown (ACPI): running → stopping (set by
// the request) → stopped. A shutdown the guest ignores, or a failed stop, leaves it running.
import type { HypervisorDriver } from '../../../hypervisor/driver.ts'
import type { JobHandler } from '../../../engine/types.ts'
import { heldServer, settleServer } from './server-start.ts'

export function serverStopHandler (driver: () => HypervisorDriver): JobHandler {
  return {
    resumable: true,
    async run (ctx) {
      const server = await heldServer(ctx)
      const shutdown = ctx.job.params.action === 'shutdown'
      ctx.progress({ description: `${shutdown ? 'shutting down' : 'stopping'} ${server.name}` })
      let off = true
      if (shutdown) off = await driver().shutdown(server, ctx.signal)
      else await driver().stop(server, ctx.signal)
      ctx.signal.throwIfAborted()
      if (!off) {
        await settleServer(ctx, { status: 'running' })
        ctx.progress({ description: `${server.name} is still running: the guest did not power off` })
        return { status: 'running', description: 'the guest did not power off' }
      }
      await settleServer(ctx, { status: 'stopped', activeSince: null })
      ctx.progress({ description: `${shutdown ? 'shut down' : 'stopped'} ${server.name}` })
      return { status: 'stopped' }
    },
    async cleanup (ctx) {
      await settleServer(ctx, { status: 'running' })
    }
  }
}
