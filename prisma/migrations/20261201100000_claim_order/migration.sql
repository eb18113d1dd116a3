-- The due-job index in the claim's own order, so a claim reads only as many due jobs as it takes
-- (the run_at index made every claim read and sort all due jobs: a claim cost grew with the queue).
-- Jobs of the default priority 0 are read in (run_at, created) order up to now(), which stops
-- before parked ones; jobs of another priority (rare) have their own index in (priority, run_at)
-- order. Partial indexes cannot be declared in schema.prisma: they live only in migrations.
DROP INDEX IF EXISTS "jobs_due_idx";
CREATE INDEX "jobs_due_idx" ON "jobs" ("run_at", "created") WHERE "state" IN ('queued', 'started', 'cancelling') AND "locked_by" IS NULL AND "priority" = 0;
CREATE INDEX "jobs_due_priority_idx" ON "jobs" ("priority" DESC, "run_at", "created") WHERE "state" IN ('queued', 'started', 'cancelling') AND "locked_by" IS NULL AND "priority" <> 0;
