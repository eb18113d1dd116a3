import { heldServer, settleServer } from "./server-start.js";
export function serverStopHandler(driver) {
    return {
        resumable: true,
        async run(ctx) {
            const server = await heldServer(ctx);
            const shutdown = ctx.job.params.action === 'shutdown';
            ctx.progress({ description: `${shutdown ? 'shutting down' : 'stopping'} ${server.name}` });
            let off = true;
            if (shutdown)
                off = await driver().shutdown(server, ctx.signal);
            else
                await driver().stop(server, ctx.signal);
            ctx.signal.throwIfAborted();
            if (!off) {
                await settleServer(ctx, { status: 'running' });
                return { status: 'running', description: 'the guest did not power off' };
            }
            await settleServer(ctx, { status: 'stopped', activeSince: null });
            return { status: 'stopped' };
        },
        async cleanup(ctx) {
            await settleServer(ctx, { status: 'running' });
        }
    };
}
//# sourceMappingURL=server-stop.js.map