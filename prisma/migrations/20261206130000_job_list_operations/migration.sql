-- Deep offset pages of the /jobs/ list filtered by operation seek too (issue 18). The finished
-- top-level jobs' counters of 20261206100000_job_list_buckets are kept per operation as well as
-- per state, and the open jobs' index carries the operation, so a page in last_modified order
-- filtered by operation (with or without a finished state) finds the ten minutes holding its first
-- row from them, and skips only inside those ten minutes, as the unfiltered list does. Without them
-- such a page skipped every entry of the account's list before it (the filter tested on each).
-- Everything else is as that migration says: a job's operation never changes, so a job is still
-- counted once when it finishes and counted down when it is deleted.

-- what the running processes enqueue, finish or purge while this transaction counts waits for it
LOCK TABLE "jobs" IN SHARE ROW EXCLUSIVE MODE;

-- counted again below, per operation
DELETE FROM "job_top_finished";
DELETE FROM "job_top_finished_tx";

ALTER TABLE "job_top_finished" ADD COLUMN "operation" TEXT NOT NULL,
  DROP CONSTRAINT "job_top_finished_pkey",
  ADD CONSTRAINT "job_top_finished_pkey" PRIMARY KEY ("owner_id", "bucket", "state", "operation");
ALTER TABLE "job_top_finished_tx" ADD COLUMN "operation" TEXT NOT NULL,
  DROP CONSTRAINT "job_top_finished_tx_pkey",
  ADD CONSTRAINT "job_top_finished_tx_pkey" PRIMARY KEY ("owner_id", "bucket", "state", "operation", "tx");

-- the operation of the open jobs in their index, so the seek counts those of an operation from it alone
DROP INDEX "jobs_top_open_idx";
CREATE INDEX "jobs_top_open_idx" ON "jobs" ("owner_id", "last_modified") INCLUDE ("operation") WHERE "parent_id" IS NULL AND "state" IN ('queued', 'started', 'cancelling');

CREATE OR REPLACE FUNCTION "job_list_buckets_written"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_top_finished_tx AS f (owner_id, bucket, state, operation, tx, n)
  SELECT owner_id, job_list_bucket(last_modified), state, operation, txid_current(), CASE TG_OP WHEN 'INSERT' THEN count(*) ELSE -count(*) END
  FROM job_list_rows WHERE parent_id IS NULL AND state IN ('success', 'error', 'cancelled')
  GROUP BY 1, 2, 3, 4
  ON CONFLICT (owner_id, bucket, state, operation, tx) DO UPDATE SET n = f.n + EXCLUDED.n;
  INSERT INTO job_top_created AS c (owner_id, bucket, shard, n)
  SELECT owner_id, job_list_bucket(created), (txid_current() % 8)::smallint, CASE TG_OP WHEN 'INSERT' THEN count(*) ELSE -count(*) END
  FROM job_list_rows WHERE parent_id IS NULL
  GROUP BY 1, 2 ORDER BY 1, 2
  ON CONFLICT (owner_id, bucket, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION "job_top_finished_counted"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_top_finished_tx AS f (owner_id, bucket, state, operation, tx, n)
  VALUES (NEW.owner_id, job_list_bucket(NEW.last_modified), NEW.state, NEW.operation, txid_current(), 1)
  ON CONFLICT (owner_id, bucket, state, operation, tx) DO UPDATE SET n = f.n + 1;
  RETURN NULL;
END $$;

-- a counted row that (which the service never does) stopped being finished, moved its
-- last_modified to another bucket, changed its finished state, operation, owner or top-levelness:
-- out of its old count, into its new one if it still counts
CREATE OR REPLACE FUNCTION "job_top_finished_moved"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_top_finished_tx AS f (owner_id, bucket, state, operation, tx, n)
  SELECT o, b, s, op, txid_current(), sum(d) FROM (VALUES
    (OLD.owner_id, job_list_bucket(OLD.last_modified), OLD.state, OLD.operation, CASE WHEN OLD.parent_id IS NULL AND OLD.state IN ('success', 'error', 'cancelled') THEN -1 ELSE 0 END),
    (NEW.owner_id, job_list_bucket(NEW.last_modified), NEW.state, NEW.operation, CASE WHEN NEW.parent_id IS NULL AND NEW.state IN ('success', 'error', 'cancelled') THEN 1 ELSE 0 END)) AS x(o, b, s, op, d)
  GROUP BY o, b, s, op HAVING sum(d) <> 0
  ON CONFLICT (owner_id, bucket, state, operation, tx) DO UPDATE SET n = f.n + EXCLUDED.n;
  RETURN NULL;
END $$;

DROP TRIGGER "jobs_top_finished_update" ON "jobs";
CREATE TRIGGER "jobs_top_finished_update" AFTER UPDATE OF "owner_id", "parent_id", "state", "operation", "last_modified" ON "jobs" FOR EACH ROW
  WHEN (OLD.parent_id IS NULL AND OLD.state IN ('success', 'error', 'cancelled')
    AND (NEW.parent_id IS NOT NULL OR NEW.state IS DISTINCT FROM OLD.state OR NEW.owner_id IS DISTINCT FROM OLD.owner_id
      OR NEW.operation IS DISTINCT FROM OLD.operation
      OR job_list_bucket(NEW.last_modified) IS DISTINCT FROM job_list_bucket(OLD.last_modified)))
  EXECUTE FUNCTION job_top_finished_moved();

INSERT INTO "job_top_finished" ("owner_id", "bucket", "state", "operation", "n")
SELECT "owner_id", job_list_bucket("last_modified"), "state", "operation", count(*) FROM "jobs"
WHERE "parent_id" IS NULL AND "state" IN ('success', 'error', 'cancelled') GROUP BY 1, 2, 3, 4;
