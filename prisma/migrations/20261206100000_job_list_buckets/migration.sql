-- Deep offset pages of the unfiltered /jobs/ list without skipping the offset (issue 18). The page
-- at offset 500,000 of a million jobs skipped 500,000 entries of jobs_top_owner_last_modified_idx:
-- 0.1 µs each, 50-110 ms on these machines, as much as the bare `SELECT id ... OFFSET` it was
-- measured beside. These counters tell which ten minutes of last_modified hold row N of the list,
-- and how many rows come before them, so the page skips only inside those ten minutes. They are
-- kept per state, so a list of finished states (`state=success`, the one that goes deep) seeks too.
-- job_top_created does the same for the list in `created` order (47 ms at offset 500,000).
--
-- Only finished top-level jobs (success, error, cancelled) are counted in job_top_finished: a
-- finished job's last_modified no longer moves (as jobs_top_owner_success_idx relies on), so it
-- is counted once, when it finishes (in the bucket of its last_modified), and counted down only
-- when it is deleted (the purge, removing an account). Enqueues, claims, heartbeats and progress
-- never write there. The jobs still open (queued, started, cancelling: each moves its
-- last_modified as it runs) are counted by the list when it needs them, from jobs_top_open_idx:
-- an index of those only.
--
-- A finish is counted by a row trigger, and one statement finishes a batch of jobs of many
-- accounts (src/engine/queue-sql.ts, FINISH_SQL) in no set order; two batches locking shared
-- counter rows in opposite orders would deadlock. So each transaction counts into rows of its own
-- in job_top_finished_tx (`tx`, its txid_current()), which no other transaction ever writes or
-- waits for, and the purge folds the committed ones into job_top_finished, one row per account,
-- bucket and state (src/engine/purge.ts, every 10 minutes by default), dropping those that come
-- to 0. A reader sums both tables: a row leaves job_top_finished_tx in the statement that adds it
-- to job_top_finished, so any snapshot sees each count once.
--
-- job_top_created is written by statement-level triggers only (inserts and deletes; `created`
-- never changes), sharded by transaction (txid % 8) as job_top_counts is, each statement
-- upserting in (owner_id, bucket) order. Buckets of it whose jobs are all gone are deleted by the
-- purge once older than the retention. The list's snapshot sees the counters and the jobs of the
-- same committed transactions, so the sums are the counts of the rows it sees.

-- what the running processes enqueue, finish or purge while this transaction counts waits for it
LOCK TABLE "jobs" IN SHARE ROW EXCLUSIVE MODE;

-- the ten minutes of `t`, from a fixed origin (immutable: date_bin of timestamptz does not depend
-- on the session's time zone for an interval without days or months)
CREATE FUNCTION "job_list_bucket"(t TIMESTAMPTZ) RETURNS TIMESTAMPTZ LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN date_bin(interval '10 minutes', t, TIMESTAMPTZ '2000-01-01 00:00:00+00');
-- the end of the bucket `b` (exclusive): the list's seek scans from there (src/features/jobs/read-sql.ts)
CREATE FUNCTION "job_list_bucket_end"(b TIMESTAMPTZ) RETURNS TIMESTAMPTZ LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN b + interval '10 minutes';

CREATE TABLE "job_top_finished" (
  "owner_id" UUID NOT NULL,
  "bucket" TIMESTAMPTZ NOT NULL,
  "state" TEXT NOT NULL,
  "n" BIGINT NOT NULL,
  CONSTRAINT "job_top_finished_pkey" PRIMARY KEY ("owner_id", "bucket", "state")
);

CREATE TABLE "job_top_finished_tx" (
  "owner_id" UUID NOT NULL,
  "bucket" TIMESTAMPTZ NOT NULL,
  "state" TEXT NOT NULL,
  "tx" BIGINT NOT NULL,
  "n" BIGINT NOT NULL,
  CONSTRAINT "job_top_finished_tx_pkey" PRIMARY KEY ("owner_id", "bucket", "state", "tx")
);

-- every top-level job by ten minutes of `created`, which never changes: written by the statements
-- that insert and delete jobs only, as job_top_counts is
CREATE TABLE "job_top_created" (
  "owner_id" UUID NOT NULL,
  "bucket" TIMESTAMPTZ NOT NULL,
  "shard" SMALLINT NOT NULL,
  "n" BIGINT NOT NULL,
  CONSTRAINT "job_top_created_pkey" PRIMARY KEY ("owner_id", "bucket", "shard")
);

CREATE INDEX "jobs_top_open_idx" ON "jobs" ("owner_id", "last_modified") WHERE "parent_id" IS NULL AND "state" IN ('queued', 'started', 'cancelling');

-- the rows a statement inserted (counted up) or deleted (down), as job_top_counts counts them: both
-- triggers name their transition table job_list_rows
CREATE FUNCTION "job_list_buckets_written"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_top_finished_tx AS f (owner_id, bucket, state, tx, n)
  SELECT owner_id, job_list_bucket(last_modified), state, txid_current(), CASE TG_OP WHEN 'INSERT' THEN count(*) ELSE -count(*) END
  FROM job_list_rows WHERE parent_id IS NULL AND state IN ('success', 'error', 'cancelled')
  GROUP BY 1, 2, 3
  ON CONFLICT (owner_id, bucket, state, tx) DO UPDATE SET n = f.n + EXCLUDED.n;
  INSERT INTO job_top_created AS c (owner_id, bucket, shard, n)
  SELECT owner_id, job_list_bucket(created), (txid_current() % 8)::smallint, CASE TG_OP WHEN 'INSERT' THEN count(*) ELSE -count(*) END
  FROM job_list_rows WHERE parent_id IS NULL
  GROUP BY 1, 2 ORDER BY 1, 2
  ON CONFLICT (owner_id, bucket, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
  RETURN NULL;
END $$;

-- a top-level row that changed owner, top-levelness or the ten minutes of its created (the
-- service does none of these): out of its old count, into its new one
CREATE FUNCTION "job_top_created_moved"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_top_created AS c (owner_id, bucket, shard, n)
  SELECT o, b, (txid_current() % 8)::smallint, sum(d) FROM (VALUES
    (OLD.owner_id, job_list_bucket(OLD.created), CASE WHEN OLD.parent_id IS NULL THEN -1 ELSE 0 END),
    (NEW.owner_id, job_list_bucket(NEW.created), CASE WHEN NEW.parent_id IS NULL THEN 1 ELSE 0 END)) AS x(o, b, d)
  GROUP BY o, b HAVING sum(d) <> 0 ORDER BY o, b
  ON CONFLICT (owner_id, bucket, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
  RETURN NULL;
END $$;

-- a top-level job that finished: into the count of its bucket and state
CREATE FUNCTION "job_top_finished_counted"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_top_finished_tx AS f (owner_id, bucket, state, tx, n)
  VALUES (NEW.owner_id, job_list_bucket(NEW.last_modified), NEW.state, txid_current(), 1)
  ON CONFLICT (owner_id, bucket, state, tx) DO UPDATE SET n = f.n + 1;
  RETURN NULL;
END $$;

-- a counted row that (which the service never does) stopped being finished, moved its
-- last_modified to another bucket, changed its finished state, owner or top-levelness: out of its
-- old count, into its new one if it still counts
CREATE FUNCTION "job_top_finished_moved"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_top_finished_tx AS f (owner_id, bucket, state, tx, n)
  SELECT o, b, s, txid_current(), sum(d) FROM (VALUES
    (OLD.owner_id, job_list_bucket(OLD.last_modified), OLD.state, CASE WHEN OLD.parent_id IS NULL AND OLD.state IN ('success', 'error', 'cancelled') THEN -1 ELSE 0 END),
    (NEW.owner_id, job_list_bucket(NEW.last_modified), NEW.state, CASE WHEN NEW.parent_id IS NULL AND NEW.state IN ('success', 'error', 'cancelled') THEN 1 ELSE 0 END)) AS x(o, b, s, d)
  GROUP BY o, b, s HAVING sum(d) <> 0
  ON CONFLICT (owner_id, bucket, state, tx) DO UPDATE SET n = f.n + EXCLUDED.n;
  RETURN NULL;
END $$;

CREATE FUNCTION "job_list_buckets_truncated"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM job_top_finished;
  DELETE FROM job_top_finished_tx;
  DELETE FROM job_top_created;
  RETURN NULL;
END $$;

CREATE TRIGGER "jobs_list_buckets_insert" AFTER INSERT ON "jobs"
  REFERENCING NEW TABLE AS job_list_rows FOR EACH STATEMENT EXECUTE FUNCTION job_list_buckets_written();
CREATE TRIGGER "jobs_list_buckets_delete" AFTER DELETE ON "jobs"
  REFERENCING OLD TABLE AS job_list_rows FOR EACH STATEMENT EXECUTE FUNCTION job_list_buckets_written();
CREATE TRIGGER "jobs_list_buckets_truncate" AFTER TRUNCATE ON "jobs"
  FOR EACH STATEMENT EXECUTE FUNCTION job_list_buckets_truncated();

-- the WHEN tests are evaluated per updated row without calling the functions: the first is true
-- once per top-level job, for the update that finishes it, and both are false for claims,
-- heartbeats and progress (an open job is not counted)
CREATE TRIGGER "jobs_top_finished_finish" AFTER UPDATE OF "parent_id", "state" ON "jobs" FOR EACH ROW
  WHEN (NOT (OLD.parent_id IS NULL AND OLD.state IN ('success', 'error', 'cancelled'))
    AND NEW.parent_id IS NULL AND NEW.state IN ('success', 'error', 'cancelled'))
  EXECUTE FUNCTION job_top_finished_counted();
CREATE TRIGGER "jobs_top_finished_update" AFTER UPDATE OF "owner_id", "parent_id", "state", "last_modified" ON "jobs" FOR EACH ROW
  WHEN (OLD.parent_id IS NULL AND OLD.state IN ('success', 'error', 'cancelled')
    AND (NEW.parent_id IS NOT NULL OR NEW.state IS DISTINCT FROM OLD.state OR NEW.owner_id IS DISTINCT FROM OLD.owner_id
      OR job_list_bucket(NEW.last_modified) IS DISTINCT FROM job_list_bucket(OLD.last_modified)))
  EXECUTE FUNCTION job_top_finished_moved();

CREATE TRIGGER "jobs_top_created_update" AFTER UPDATE OF "owner_id", "parent_id", "created" ON "jobs" FOR EACH ROW
  WHEN ((OLD.parent_id IS NULL OR NEW.parent_id IS NULL) AND ((OLD.parent_id IS NULL) <> (NEW.parent_id IS NULL)
    OR OLD.owner_id IS DISTINCT FROM NEW.owner_id OR job_list_bucket(OLD.created) IS DISTINCT FROM job_list_bucket(NEW.created)))
  EXECUTE FUNCTION job_top_created_moved();

INSERT INTO "job_top_created" ("owner_id", "bucket", "shard", "n")
SELECT "owner_id", job_list_bucket("created"), 0, count(*) FROM "jobs" WHERE "parent_id" IS NULL GROUP BY 1, 2;

INSERT INTO "job_top_finished" ("owner_id", "bucket", "state", "n")
SELECT "owner_id", job_list_bucket("last_modified"), "state", count(*) FROM "jobs"
WHERE "parent_id" IS NULL AND "state" IN ('success', 'error', 'cancelled') GROUP BY 1, 2, 3;
