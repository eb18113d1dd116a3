-- The list in created order carries each top-level job's state and operation in its index, as the
-- list in last_modified order does (jobs_top_owner_last_modified_idx): a deep offset page filtered
-- by state or operation in created order then skips its offset in the index alone (index-only,
-- once VACUUM has set the visibility map) instead of reading each skipped job's table row to test
-- the filter (bench/jobs-list.ts: 134-143 ms at offsets 100,000-500,000 of a million jobs).
-- Every update of a job changes last_modified, an indexed column, so none was a HOT update
-- before either: the wider entries are the whole cost.
DROP INDEX IF EXISTS "jobs_top_owner_created_idx";
CREATE INDEX "jobs_top_owner_created_idx" ON "jobs" ("owner_id", "created" DESC, "id") INCLUDE ("state", "operation") WHERE "parent_id" IS NULL;
