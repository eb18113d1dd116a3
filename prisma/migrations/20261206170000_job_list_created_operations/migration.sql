-- Deep offset pages of the /jobs/ list in created order filtered by operation seek too (issue 18),
-- as those in last_modified order do since 20261206130000_job_list_operations: job_top_created
-- counts every top-level job per operation as well as per ten minutes of created, so such a page
-- finds the ten minutes holding its first row from the counters of its operations and skips only
-- inside them. Without them it skipped every entry of the account's list before it, the operation
-- tested on each (bench/jobs-list.ts: 56.4 ms at offset 100,000 of one operation's jobs, from a
-- million, even with the operation carried in the index, 20261206160000_job_list_created_include).
-- Everything else is as 20261206100000_job_list_buckets says: written by statement-level
-- triggers on insert and delete, sharded by transaction; a change of a job's operation (which the
-- service never makes) moves its count.

-- what the running processes enqueue or purge while this transaction counts waits for it
LOCK TABLE "jobs" IN SHARE ROW EXCLUSIVE MODE;

-- counted again below, per operation
DELETE FROM "job_top_created";

ALTER TABLE "job_top_created" ADD COLUMN "operation" TEXT NOT NULL,
  DROP CONSTRAINT "job_top_created_pkey",
  ADD CONSTRAINT "job_top_created_pkey" PRIMARY KEY ("owner_id", "bucket", "operation", "shard");

CREATE OR REPLACE FUNCTION "job_list_buckets_written"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_top_finished_tx AS f (owner_id, bucket, state, operation, tx, n)
  SELECT owner_id, job_list_bucket(last_modified), state, operation, txid_current(), CASE TG_OP WHEN 'INSERT' THEN count(*) ELSE -count(*) END
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

-- a top-level row that changed owner, top-levelness, operation or the ten minutes of its created
-- (the service does none of these): out of its old count, into its new one
CREATE OR REPLACE FUNCTION "job_top_created_moved"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_top_created AS c (owner_id, bucket, operation, shard, n)
  SELECT o, b, op, (txid_current() % 8)::smallint, sum(d) FROM (VALUES
    (OLD.owner_id, job_list_bucket(OLD.created), OLD.operation, CASE WHEN OLD.parent_id IS NULL THEN -1 ELSE 0 END),
    (NEW.owner_id, job_list_bucket(NEW.created), NEW.operation, CASE WHEN NEW.parent_id IS NULL THEN 1 ELSE 0 END)) AS x(o, b, op, d)
  GROUP BY o, b, op HAVING sum(d) <> 0 ORDER BY o, b, op
  ON CONFLICT (owner_id, bucket, operation, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
  RETURN NULL;
END $$;

DROP TRIGGER "jobs_top_created_update" ON "jobs";
CREATE TRIGGER "jobs_top_created_update" AFTER UPDATE OF "owner_id", "parent_id", "created", "operation" ON "jobs" FOR EACH ROW
  WHEN ((OLD.parent_id IS NULL OR NEW.parent_id IS NULL) AND ((OLD.parent_id IS NULL) <> (NEW.parent_id IS NULL)
    OR OLD.owner_id IS DISTINCT FROM NEW.owner_id OR OLD.operation IS DISTINCT FROM NEW.operation
    OR job_list_bucket(OLD.created) IS DISTINCT FROM job_list_bucket(NEW.created)))
  EXECUTE FUNCTION job_top_created_moved();

INSERT INTO "job_top_created" ("owner_id", "bucket", "operation", "shard", "n")
SELECT "owner_id", job_list_bucket("created"), "operation", 0, count(*) FROM "jobs" WHERE "parent_id" IS NULL GROUP BY 1, 2, 3;
