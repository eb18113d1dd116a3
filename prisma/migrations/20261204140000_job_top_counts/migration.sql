-- Per-account counters of top-level jobs (issue 18). The unfiltered `/jobs/` page counted the
-- account's top-level jobs on every page, up to 10,000 index entries: 0.1-0.2 µs of PostgreSQL
-- time per job per page (an account with ~4,000 jobs from the last three days served half the
-- jobs-list rate of one with 200), and beyond 10,000 only an estimate. These counters make that
-- count a sum of at most 8 rows (the shards below), exact at any size.
--
-- Kept by statement-level triggers with transition tables: one upsert per statement and account,
-- not per row (a bulk enqueue of 500 jobs writes one counter row), and none for a statement that
-- writes only child jobs. A top-level job's owner and parent never change (the update trigger below
-- keeps the counters right if one ever did), so claims, progress and finishes never touch them.
--
-- Sharded by transaction (txid % 8): the row lock an upsert takes is held until its transaction
-- commits, and concurrent enqueues of one account would otherwise queue on one row. A statement
-- touching several accounts (the purge) upserts them in owner_id order, so two such statements
-- lock in the same order. The list's snapshot sees the counters and the jobs of the same
-- committed transactions, so the sum is the count of the top-level jobs it sees.
CREATE TABLE "job_top_counts" (
  "owner_id" UUID NOT NULL,
  "shard" SMALLINT NOT NULL,
  "n" BIGINT NOT NULL,
  CONSTRAINT "job_top_counts_pkey" PRIMARY KEY ("owner_id", "shard")
);

-- the rows a statement inserted (counted up) or deleted (down): both triggers name their
-- transition table job_top_counts_rows
CREATE FUNCTION "job_top_counts_written"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_top_counts AS c (owner_id, shard, n)
  SELECT owner_id, (txid_current() % 8)::smallint, CASE TG_OP WHEN 'INSERT' THEN count(*) ELSE -count(*) END
  FROM job_top_counts_rows WHERE parent_id IS NULL
  GROUP BY owner_id ORDER BY owner_id
  ON CONFLICT (owner_id, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
  RETURN NULL;
END $$;

-- a row whose owner or top-levelness changed: out of its old count, into its new one
CREATE FUNCTION "job_top_counts_moved"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_top_counts AS c (owner_id, shard, n)
  SELECT o, (txid_current() % 8)::smallint, d FROM (VALUES
    (OLD.owner_id, CASE WHEN OLD.parent_id IS NULL THEN -1 ELSE 0 END),
    (NEW.owner_id, CASE WHEN NEW.parent_id IS NULL THEN 1 ELSE 0 END)) AS x(o, d)
  WHERE d <> 0 ORDER BY o
  ON CONFLICT (owner_id, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
  RETURN NULL;
END $$;

CREATE FUNCTION "job_top_counts_truncated"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM job_top_counts;
  RETURN NULL;
END $$;

-- what the running processes enqueue or purge while this transaction counts waits for it
LOCK TABLE "jobs" IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER "jobs_top_counts_insert" AFTER INSERT ON "jobs"
  REFERENCING NEW TABLE AS job_top_counts_rows FOR EACH STATEMENT EXECUTE FUNCTION job_top_counts_written();
CREATE TRIGGER "jobs_top_counts_delete" AFTER DELETE ON "jobs"
  REFERENCING OLD TABLE AS job_top_counts_rows FOR EACH STATEMENT EXECUTE FUNCTION job_top_counts_written();
-- the WHEN test is evaluated per updated row without calling the function; it is false for every
-- update the service makes
CREATE TRIGGER "jobs_top_counts_update" AFTER UPDATE OF "owner_id", "parent_id" ON "jobs" FOR EACH ROW
  WHEN (OLD.owner_id IS DISTINCT FROM NEW.owner_id OR (OLD.parent_id IS NULL) <> (NEW.parent_id IS NULL))
  EXECUTE FUNCTION job_top_counts_moved();
CREATE TRIGGER "jobs_top_counts_truncate" AFTER TRUNCATE ON "jobs"
  FOR EACH STATEMENT EXECUTE FUNCTION job_top_counts_truncated();

INSERT INTO "job_top_counts" ("owner_id", "shard", "n")
SELECT "owner_id", 0, count(*) FROM "jobs" WHERE "parent_id" IS NULL GROUP BY "owner_id";
