-- A deep offset page of the finished jobs (`/jobs/?state=success&offset=500000`) skipped its
-- offset in jobs_top_owner_last_modified_idx testing every entry's state: 62.7 ms at a million
-- jobs, against 41 ms for the same page unfiltered (issue 18). Success is the state most of an
-- account's jobs end in, so this page is the one that goes deep; the other states' lists are short.
-- Only successful top-level jobs have entries here: a job gets its entry once, when it succeeds
-- (a finished job's last_modified no longer moves), so enqueues, claims and progress never write
-- it. The list compiles `state=success` to the literal this predicate names (src/features/jobs/
-- read-sql.ts), so its prepared statements' generic plans can use the index.
CREATE INDEX "jobs_top_owner_success_idx" ON "jobs" ("owner_id", "last_modified" DESC, "id") INCLUDE ("operation") WHERE "parent_id" IS NULL AND "state" = 'success';
