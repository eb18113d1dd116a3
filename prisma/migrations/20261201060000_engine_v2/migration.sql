-- Job engine v2: the claim finds each kind of runnable job through its own partial index, so parked
-- jobs (run_at far out) and held jobs (leased to a request) are never scanned by a poll.
-- Partial indexes cannot be declared in schema.prisma: they live only in this migration.

-- due: unlocked unfinished jobs, by run_at (a range scan up to now() stops before parked ones)
CREATE INDEX "jobs_due_idx" ON "jobs" ("run_at") WHERE "state" IN ('queued', 'started', 'cancelling') AND "locked_by" IS NULL;

-- cancelled and not running: claimed for their cleanup
CREATE INDEX "jobs_cancel_idx" ON "jobs" ("id") WHERE "state" IN ('queued', 'started', 'cancelling') AND "locked_by" IS NULL AND "cancel_requested";

-- leased: found when their lease expires (a takeover)
CREATE INDEX "jobs_lease_idx" ON "jobs" ("locked_until") WHERE "state" IN ('queued', 'started', 'cancelling') AND "locked_by" IS NOT NULL;
