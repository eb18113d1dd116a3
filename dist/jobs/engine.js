// The job runner: claims jobs from PostgreSQL, holds their lease by heartbeat, runs the handler
// of each operation with an abort signal, settles parents once their children are done, and
// records and publishes every outcome.
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { etaOf, formatBytes, percentOf } from "../domain/progress.js";
import { publishChange } from "../services/events.js";
import { jobChanges, requestCancel } from "./cancel.js";
import { CHANNELS } from "./listener.js";
import { childOutcome, claimJobs, finishJob, heartbeat, releaseJobs, startAncestors } from "./queue-sql.js";
import { JobFailure } from "./types.js";
const CANCELLED = { error_type: 'cancelled', error_message: 'The job was cancelled' };
export class JobEngine {
    opts;
    workerId = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
    handlers = new Map();
    running = new Map();
    timer;
    heartbeatTimer;
    stopping = true;
    polling = false;
    // the claim in flight, if any (stop() waits for it)
    pollDone = Promise.resolve();
    wakePending = false;
    unlisten = [];
    constructor(opts) {
        this.opts = opts;
    }
    register(operation, handler) {
        if (this.handlers.has(operation))
            throw new Error(`a handler for ${operation} exists already`);
        this.handlers.set(operation, handler);
    }
    /** The handler registered for an operation (e.g. for tests that wrap it). */
    handler(operation) {
        return this.handlers.get(operation);
    }
    start() {
        this.stopping = false;
        const l = this.opts.listener;
        if (l) {
            this.unlisten.push(l.on(CHANNELS.jobs, () => this.wake()));
            this.unlisten.push(l.on(CHANNELS.cancel, (id) => this.abortLocal(id)));
        }
        this.schedule(0);
        const beat = this.opts.heartbeatMs ?? Math.min(1000, Math.max(250, Math.floor(this.opts.leaseSeconds * 1000 / 3)));
        this.heartbeatTimer = setInterval(() => { void this.beat(); }, beat);
    }
    /** Wakes the poller now (new job enqueued, NOTIFY received). */
    wake() {
        if (this.stopping)
            return;
        if (this.polling)
            this.wakePending = true;
        else
            this.schedule(0);
    }
    /** Stops claiming, aborts running handlers and gives their jobs back to the queue. */
    async stop() {
        this.stopping = true;
        for (const u of this.unlisten)
            u();
        this.unlisten = [];
        clearTimeout(this.timer);
        clearInterval(this.heartbeatTimer);
        // a claim in flight has already committed its jobs as ours: let it launch them, so they are
        // given back below rather than left started until their lease runs out
        await this.pollDone;
        const ids = [...this.running.keys()];
        for (const r of this.running.values())
            r.controller.abort(new Error('shutting down'));
        // a handler that ignores its signal is not waited for longer than a lease
        await Promise.race([
            Promise.allSettled([...this.running.values()].map(r => r.promise)),
            new Promise(resolve => setTimeout(resolve, this.opts.leaseSeconds * 1000).unref())
        ]);
        await releaseJobs(this.opts.prisma, this.workerId, ids).catch(err => this.opts.log.error({ err }, 'could not release jobs'));
    }
    /**
     * Simulates this process dying (tests): timers stop and handlers are aborted, but nothing is
     * written, so the leases simply expire.
     */
    crash() {
        this.stopping = true;
        for (const u of this.unlisten)
            u();
        this.unlisten = [];
        clearTimeout(this.timer);
        clearInterval(this.heartbeatTimer);
        for (const r of this.running.values())
            r.controller.abort(new Error('lease lost'));
    }
    /** Signals a running job of this process to abort now (cancel NOTIFY, heartbeat). */
    abortLocal(id) {
        const r = this.running.get(id);
        if (r && !r.cancelled) {
            r.cancelled = true;
            r.controller.abort(new Error('cancelled'));
        }
    }
    get activeJobs() {
        return this.running.size;
    }
    /** Resolves when no job runs in this engine (tests, benches). */
    async idle() {
        while (this.running.size > 0)
            await Promise.allSettled([...this.running.values()].map(r => r.promise));
    }
    schedule(ms) {
        clearTimeout(this.timer);
        this.timer = setTimeout(() => { void this.poll(); }, ms);
    }
    poll() {
        if (this.stopping || this.polling)
            return Promise.resolve();
        this.pollDone = this.claimAndLaunch();
        return this.pollDone;
    }
    async claimAndLaunch() {
        this.polling = true;
        this.wakePending = false;
        let claimed = [];
        try {
            const free = this.opts.concurrency - this.running.size;
            if (free > 0) {
                claimed = await claimJobs(this.opts.prisma, this.workerId, this.opts.leaseSeconds, free);
                // running before anything else, so a cancel NOTIFY from now on finds the job
                for (const row of claimed)
                    this.launch(row);
                if (claimed.length > 0)
                    await this.announceClaims(claimed).catch(err => this.opts.log.warn({ err }, 'could not publish claimed jobs'));
            }
        }
        catch (err) {
            this.opts.log.error({ err }, 'claiming jobs failed');
        }
        finally {
            this.polling = false;
        }
        if (!this.stopping) {
            const more = claimed.length > 0 || this.wakePending;
            this.schedule(more && this.running.size < this.opts.concurrency ? 0 : (this.opts.pollMs ?? 1000));
        }
    }
    async announceClaims(claimed) {
        // the claim statement published the claimed jobs; their ancestors start with them
        const children = claimed.filter(r => r.parent_id).map(r => r.id);
        if (children.length > 0)
            await publishChange(this.opts.prisma, jobChanges(await startAncestors(this.opts.prisma, children)));
        for (const r of claimed)
            this.opts.metrics?.claimed(r.operation, r.claim_latency_ms);
    }
    async beat() {
        const ids = [...this.running.keys()];
        if (ids.length === 0)
            return;
        try {
            const held = await heartbeat(this.opts.prisma, this.workerId, ids, this.opts.leaseSeconds);
            const heldIds = new Set(held.map(h => h.id));
            for (const id of ids) {
                const r = this.running.get(id);
                if (r && !heldIds.has(id))
                    r.controller.abort(new Error('lease lost'));
            }
            for (const h of held)
                if (h.cancel_requested)
                    this.abortLocal(h.id);
        }
        catch (err) {
            this.opts.log.warn({ err }, 'heartbeat failed');
        }
    }
    launch(row) {
        const controller = new AbortController();
        const entry = { controller, promise: Promise.resolve(), cancelled: row.cancel_requested };
        this.running.set(row.id, entry);
        entry.promise = this.execute(row, entry)
            .catch(err => this.opts.log.error({ err, job: row.id }, 'job bookkeeping failed; the lease will expire and the job be taken over'))
            .finally(() => {
            this.running.delete(row.id);
            this.wake();
        });
    }
    context(row, signal, log) {
        const { prisma } = this.opts;
        const job = {
            id: row.id,
            ownerId: row.owner_id,
            operation: row.operation,
            parentId: row.parent_id,
            rootId: row.root_id,
            params: row.params ?? {},
            checkpoint: row.checkpoint,
            attempts: row.attempts
        };
        const interval = this.opts.progressIntervalMs ?? 250;
        const logEvery = this.opts.progressLogMs ?? 5000;
        const startedAt = Date.now();
        let last = 0;
        let lastLog = startedAt;
        let state = {};
        let dirty = false;
        let flushTimer;
        // the last progress write in flight: settling waits for it, or it could land after the job's
        // final row (and, guarded by locked_by, be lost)
        let inflight = Promise.resolve();
        const write = () => {
            if (!dirty)
                return;
            dirty = false;
            last = Date.now();
            const u = state;
            const percent = u.bytesDone !== undefined ? percentOf(u.bytesDone, u.bytesTotal) : undefined;
            const eta = u.bytesDone !== undefined ? etaOf(u.bytesDone, u.bytesTotal, (Date.now() - startedAt) / 1000) : undefined;
            if (Date.now() - lastLog >= logEvery) {
                lastLog = Date.now();
                log.info({ progress: percent, eta_seconds: eta }, u.description ?? (u.bytesDone !== undefined
                    ? `job progress: ${formatBytes(u.bytesDone)}${u.bytesTotal ? ' of ' + formatBytes(u.bytesTotal) : ''}`
                    : 'job progress'));
            }
            inflight = prisma.job.updateMany({
                where: { id: row.id, lockedBy: this.workerId },
                data: {
                    ...(u.bytesDone !== undefined ? { bytesDone: BigInt(Math.floor(u.bytesDone)) } : {}),
                    ...(u.bytesTotal !== undefined ? { bytesTotal: BigInt(Math.floor(u.bytesTotal)) } : {}),
                    ...(u.description !== undefined ? { description: u.description } : {}),
                    ...(percent !== undefined ? { progress: percent } : {}),
                    etaSeconds: eta ?? null,
                    lastModified: new Date()
                }
            }).then(r => r.count > 0 ? publishChange(prisma, jobChanges([row])) : undefined)
                .catch(err => log.warn({ err }, 'progress write failed'));
        };
        return {
            job,
            signal,
            prisma,
            log,
            progress: (u) => {
                state = { ...state, ...u };
                dirty = true;
                const wait = interval - (Date.now() - last);
                if (wait <= 0) {
                    write();
                }
                else if (!flushTimer) {
                    flushTimer = setTimeout(() => { flushTimer = undefined; write(); }, wait);
                    flushTimer.unref();
                }
            },
            checkpoint: async (data) => {
                await prisma.job.updateMany({ where: { id: row.id, lockedBy: this.workerId }, data: { checkpoint: data } });
            },
            flush: async () => {
                clearTimeout(flushTimer);
                flushTimer = undefined;
                write();
                await inflight;
            }
        };
    }
    /** Finishes a job, cancels its siblings when it failed, wakes its parent and publishes it all. */
    async settle(row, fields, log) {
        const cascade = fields.state !== 'success' && row.parent_id !== null;
        const record = () => !cascade
            ? finishJob(this.opts.prisma, this.workerId, row.id, fields)
            : this.opts.prisma.$transaction(async (tx) => {
                const finished = await finishJob(tx, this.workerId, row.id, fields);
                // one child failed or was cancelled: its siblings are cancelled, then the parent settles
                if (finished)
                    await requestCancel(tx, [row.parent_id], { childrenOnly: true, except: row.id });
                return finished;
            });
        let done;
        for (let attempt = 1;; attempt++) {
            try {
                done = await record();
                break;
            }
            catch (err) {
                // a lost connection or a serialisation failure must not leave the job to the lease
                if (attempt >= 3)
                    throw err;
                log.warn({ err, attempt }, 'recording the end of the job failed; retrying');
                await new Promise(resolve => setTimeout(resolve, 200 * attempt));
            }
        }
        if (!done) {
            log.warn('job finished after its lease was lost; its outcome was not recorded');
            return;
        }
        this.opts.metrics?.finished(row.operation, fields.state, done.duration_s);
        const line = { state: fields.state, seconds: Math.round(done.duration_s * 10) / 10, ...(fields.error ? { error: fields.error.error_message } : {}) };
        if (fields.state === 'error')
            log.warn(line, 'job failed');
        else
            log.info(line, `job ${fields.state === 'success' ? 'succeeded' : 'cancelled'}`);
    }
    async execute(row, entry) {
        const handler = this.handlers.get(row.operation);
        const log = this.opts.log.child({ job: row.id, operation: row.operation });
        const ctx = this.context(row, entry.controller.signal, log);
        const fail = async (reason) => {
            try {
                await handler?.cleanup?.(ctx, reason);
            }
            catch (err) {
                log.error({ err }, 'job cleanup failed');
            }
            await ctx.flush();
            await this.settle(row, { state: reason.state, error: reason.error ?? null }, log);
        };
        if (entry.cancelled)
            return fail({ state: 'cancelled', error: CANCELLED });
        if (row.has_children) {
            const bad = await childOutcome(this.opts.prisma, row.id);
            if (bad)
                return fail({ state: bad.state, error: bad.error ?? CANCELLED });
            if (!handler)
                return this.settle(row, { state: 'success' }, log);
        }
        if (!handler) {
            return fail({ state: 'error', error: { error_type: 'backend', error_message: `no handler for operation ${row.operation}` } });
        }
        // ran before: its process died (lease expired) or shut down while running it
        if (row.taken_over || row.attempts > 1) {
            if (!handler.resumable || row.attempts > row.max_attempts) {
                log.warn({ attempts: row.attempts }, 'job taken over from a stopped process; undoing it');
                return fail({ state: 'error', error: { error_type: 'backend', error_message: 'the process running this job stopped; its work was undone' } });
            }
            log.info({ attempts: row.attempts }, 'job taken over from a stopped process; resuming it');
        }
        else {
            log.info('job started');
        }
        try {
            const result = await handler.run(ctx);
            if (entry.cancelled)
                return fail({ state: 'cancelled', error: CANCELLED });
            if (entry.controller.signal.aborted)
                return; // lease lost or shutting down: not ours to record
            await ctx.flush();
            await this.settle(row, { state: 'success', result }, log);
        }
        catch (err) {
            if (entry.cancelled)
                return fail({ state: 'cancelled', error: CANCELLED });
            if (entry.controller.signal.aborted) {
                // lease lost or shutting down: the job is someone else's now, leave the row alone
                log.info('job aborted: ' + String(entry.controller.signal.reason?.message ?? ''));
                return;
            }
            const failure = err instanceof JobFailure;
            if (!failure)
                log.error({ err }, 'job failed with an unexpected error');
            await fail({
                state: 'error',
                error: { error_type: failure ? err.errorType : 'backend', error_message: failure ? err.message : 'internal error while running the job' }
            });
        }
    }
}
//# sourceMappingURL=engine.js.map