-- Deep offset pages of the /jobs/ list in created order filtered to finished states seek too
-- (issue 18), as those in last_modified order do since 20261206100000_job_list_buckets:
-- job_top_created_finished counts the finished top-level jobs per account, ten minutes of
-- created, state and operation, so a page such as `order_by=created&state=success&offset=500000`
-- finds the ten minutes holding its first row from the counters of its states (and operations)
-- and skips only inside them. Without them it skipped every entry of the account's list before
-- it, the state tested on each: 49-88 ms at offset 500,000 of a million jobs in bench/jobs-list.ts,
-- reading the index alone (20261206160000_job_list_created_include).
--
-- Kept as job_top_finished is (20261206100000_job_list_buckets says why): a job is counted when it
-- finishes (its created never moves), by the row trigger that counts it there, into rows of its
-- transaction's own (job_top_created_finished_tx), so batches finishing jobs of many accounts in
-- no set order never wait for each other; inserts and deletes of finished jobs by the
-- statement-level triggers; the fold moves the committed rows into job_top_created_finished and
-- drops those that come to 0 (src/engine/queue-sql.ts, foldListCounters). A reader sums both.
-- New tables rather than a column of job_top_finished: a process still on the old code folds
-- job_top_finished_tx as before (it never reads these), and its finishes are counted here by the
-- triggers, which live in the database.

-- what the running processes enqueue, finish or purge while this transaction counts waits for it
LOCK TABLE "jobs" IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE "job_top_created_finished" (
  "owner_id" UUID NOT NULL,
  "bucket" TIMESTAMPTZ NOT NULL,
  "state" TEXT NOT NULL,
  "operation" TEXT NOT NULL,
  "n" BIGINT NOT NULL,
  CONSTRAINT "job_top_created_finished_pkey" PRIMARY KEY ("owner_id", "bucket", "state", "operation")
);

CREATE TABLE "job_top_created_finished_tx" (
  "owner_id" UUID NOT NULL,
  "bucket" TIMESTAMPTZ NOT NULL,
  "state" TEXT NOT NULL,
  "operation" TEXT NOT NULL,
  "tx" BIGINT NOT NULL,
  "n" BIGINT NOT NULL,
  CONSTRAINT "job_top_created_finished_tx_pkey" PRIMARY KEY ("owner_id", "bucket", "state", "operation", "tx")
);

CREATE OR REPLACE FUNCTION "job_list_buckets_written"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_top_finished_tx AS f (owner_id, bucket, state, operation, tx, n)
  SELECT owner_id, job_list_bucket(last_modified), state, operation, txid_current(), CASE TG_OP WHEN 'INSERT' THEN count(*) ELSE -count(*) END
  FROM job_list_rows WHERE parent_id IS NULL AND state IN ('success', 'error', 'cancelled')
  GROUP BY 1, 2, 3, 4
  ON CONFLICT (owner_id, bucket, state, operation, tx) DO UPDATE SET n = f.n + EXCLUDED.n;
  INSERT INTO job_top_created_finished_tx AS f (owner_id, bucket, state, operation, tx, n)
  SELECT owner_id, job_list_bucket(created), state, operation, txid_current(), CASE TG_OP WHEN 'INSERT' THEN count(*) ELSE -count(*) END
  FROM job_list_rows WHERE parent_id IS NULL AND state IN ('success', 'error', 'cancelled')
  GROUP BY 1, 2, 3, 4
  ON CONFLICT (owner_id, bucket, state, operation, tx) DO UPDATE SET n = f.n + EXCLUDED.n;
  -- in key order, so two statements of one shard never lock its rows in opposite orders
  INSERT INTO job_top_created AS c (owner_id, bucket, operation, shard, n)
  SELECT owner_id, job_list_bucket(created), operation, (txid_current() % 8)::smallint, CASE TG_OP WHEN 'INSERT' THEN count(*) ELSE -count(*) END
  FROM job_list_rows WHERE parent_id IS NULL
  GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
  ON CONFLICT (owner_id, bucket, operation, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
  RETURN NULL;
END $$;

-- a top-level job that finished: into the counts of its buckets (of last_modified, of created),
-- state and operation
CREATE OR REPLACE FUNCTION "job_top_finished_counted"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_top_finished_tx AS f (owner_id, bucket, state, operation, tx, n)
  VALUES (NEW.owner_id, job_list_bucket(NEW.last_modified), NEW.state, NEW.operation, txid_current(), 1)
  ON CONFLICT (owner_id, bucket, state, operation, tx) DO UPDATE SET n = f.n + 1;
  INSERT INTO job_top_created_finished_tx AS f (owner_id, bucket, state, operation, tx, n)
  VALUES (NEW.owner_id, job_list_bucket(NEW.created), NEW.state, NEW.operation, txid_current(), 1)
  ON CONFLICT (owner_id, bucket, state, operation, tx) DO UPDATE SET n = f.n + 1;
  RETURN NULL;
END $$;

-- a counted row that (which the service never does) stopped being finished, moved its
-- last_modified or created to another bucket, changed its finished state, operation, owner or
-- top-levelness: out of its old counts, into its new ones if it still counts
CREATE OR REPLACE FUNCTION "job_top_finished_moved"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_top_finished_tx AS f (owner_id, bucket, state, operation, tx, n)
  SELECT o, b, s, op, txid_current(), sum(d) FROM (VALUES
    (OLD.owner_id, job_list_bucket(OLD.last_modified), OLD.state, OLD.operation, CASE WHEN OLD.parent_id IS NULL AND OLD.state IN ('success', 'error', 'cancelled') THEN -1 ELSE 0 END),
    (NEW.owner_id, job_list_bucket(NEW.last_modified), NEW.state, NEW.operation, CASE WHEN NEW.parent_id IS NULL AND NEW.state IN ('success', 'error', 'cancelled') THEN 1 ELSE 0 END)) AS x(o, b, s, op, d)
  GROUP BY o, b, s, op HAVING sum(d) <> 0
  ON CONFLICT (owner_id, bucket, state, operation, tx) DO UPDATE SET n = f.n + EXCLUDED.n;
  INSERT INTO job_top_created_finished_tx AS f (owner_id, bucket, state, operation, tx, n)
  SELECT o, b, s, op, txid_current(), sum(d) FROM (VALUES
    (OLD.owner_id, job_list_bucket(OLD.created), OLD.state, OLD.operation, CASE WHEN OLD.parent_id IS NULL AND OLD.state IN ('success', 'error', 'cancelled') THEN -1 ELSE 0 END),
    (NEW.owner_id, job_list_bucket(NEW.created), NEW.state, NEW.operation, CASE WHEN NEW.parent_id IS NULL AND NEW.state IN ('success', 'error', 'cancelled') THEN 1 ELSE 0 END)) AS x(o, b, s, op, d)
  GROUP BY o, b, s, op HAVING sum(d) <> 0
  ON CONFLICT (owner_id, bucket, state, operation, tx) DO UPDATE SET n = f.n + EXCLUDED.n;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION "job_list_buckets_truncated"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM job_top_finished;
  DELETE FROM job_top_finished_tx;
  DELETE FROM job_top_created;
  DELETE FROM job_top_created_finished;
  DELETE FROM job_top_created_finished_tx;
  RETURN NULL;
END $$;

-- as before, and a finished job whose created moved to another bucket
DROP TRIGGER "jobs_top_finished_update" ON "jobs";
CREATE TRIGGER "jobs_top_finished_update" AFTER UPDATE OF "owner_id", "parent_id", "state", "operation", "last_modified", "created" ON "jobs" FOR EACH ROW
  WHEN (OLD.parent_id IS NULL AND OLD.state IN ('success', 'error', 'cancelled')
    AND (NEW.parent_id IS NOT NULL OR NEW.state IS DISTINCT FROM OLD.state OR NEW.owner_id IS DISTINCT FROM OLD.owner_id
      OR NEW.operation IS DISTINCT FROM OLD.operation
      OR job_list_bucket(NEW.last_modified) IS DISTINCT FROM job_list_bucket(OLD.last_modified)
      OR job_list_bucket(NEW.created) IS DISTINCT FROM job_list_bucket(OLD.created)))
  EXECUTE FUNCTION job_top_finished_moved();

INSERT INTO "job_top_created_finished" ("owner_id", "bucket", "state", "operation", "n")
SELECT "owner_id", job_list_bucket("created"), "state", "operation", count(*) FROM "jobs"
WHERE "parent_id" IS NULL AND "state" IN ('success', 'error', 'cancelled') GROUP BY 1, 2, 3, 4;
