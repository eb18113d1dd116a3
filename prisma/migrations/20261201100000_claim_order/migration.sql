-- The due-job index in the claim's own order, so a claim reads only as many due jobs as it takes
-- (the run_at index made every claim read and sort all due jobs: a claim cost grew with the queue).
-- Jobs of the default priority 0 are read in (run_at, created) order up to now(), which stops
-- before parked ones; jobs of another priority (rare) have their own index in (priority, run_at)
-- order. Partial indexes cannot be declared in schema.prisma: they live only in migrations.
DROP INDEX IF EXISTS "jobs_due_idx";
CREATE INDEX "jobs_due_idx" ON "jobs" ("run_at", "created") WHERE "state" IN ('queued', 'started', 'cancelling') AND "locked_by" IS NULL AND "priority" = 0;
CREATE INDEX "jobs_due_priority_idx" ON "jobs" ("priority" DESC, "run_at", "created") WHERE "state" IN ('queued', 'started', 'cancelling') AND "locked_by" IS NULL AND "priority" <> 0;

-- Fewer index entries per job row: a job is inserted, claimed and finished (three writes that move
-- indexed columns), so every index costs three entries per job. Top-level jobs (most of them) have
-- no parent, and unfinished ones no finished_at: those two indexes keep only the rows they can
-- find (parent_id = x and finished_at < x imply NOT NULL, so the same queries use them). The
-- (state, run_at) index is not used since the partial claim indexes above.
DROP INDEX IF EXISTS "jobs_state_run_at_idx";
DROP INDEX IF EXISTS "jobs_parent_id_idx";
CREATE INDEX "jobs_parent_id_idx" ON "jobs" ("parent_id") WHERE "parent_id" IS NOT NULL;
DROP INDEX IF EXISTS "jobs_finished_at_idx";
CREATE INDEX "jobs_finished_at_idx" ON "jobs" ("finished_at") WHERE "finished_at" IS NOT NULL;
