// The built-in driver: there is no hypervisor behind this service (decisions.md), so it only
// records what a real one would have done. The job around it moves the status and active_since.
import { setTimeout as sleep } from 'node:timers/promises';
export class RecordingDriver {
    name = 'recording';
    guests = new Map();
    delayMs;
    vncHost;
    constructor(opts = {}) {
        this.delayMs = opts.delayMs ?? 0;
        this.vncHost = opts.vncHost ?? '127.0.0.1';
    }
    async start(server, signal) {
        await this.wait(signal);
        const current = this.guests.get(server.id);
        // idempotent: a start repeated after a takeover keeps the first boot time
        if (current?.state === 'running')
            return { activeSince: current.since };
        const since = new Date();
        this.guests.set(server.id, { state: 'running', since, vnc: false });
        return { activeSince: since };
    }
    async stop(server, signal) {
        await this.wait(signal);
        this.guests.set(server.id, { state: 'stopped', since: new Date(), vnc: false });
    }
    async shutdown(server, signal) {
        // a recorded guest always honours ACPI
        await this.stop(server, signal);
        return true;
    }
    async openVnc(server) {
        const g = this.guests.get(server.id);
        if (g)
            g.vnc = true;
        // a stable fake port per server, in the usual VNC range
        const port = 5900 + (parseInt(server.id.slice(0, 4), 16) % 1000);
        return `vnc://${this.vncHost}:${port}`;
    }
    async closeVnc(server) {
        const g = this.guests.get(server.id);
        if (g)
            g.vnc = false;
    }
    async wait(signal) {
        signal.throwIfAborted();
        if (this.delayMs > 0)
            await sleep(this.delayMs, undefined, { signal });
    }
}
//# sourceMappingURL=recording.js.map