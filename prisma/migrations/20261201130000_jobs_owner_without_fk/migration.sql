-- jobs.owner_id keeps no foreign key to accounts. The check ran for every job row written (a
-- lookup of the account and a KEY SHARE lock on its row, per job: 15% of the database's time in a
-- bulk enqueue of 500 jobs, and every concurrent enqueue of one account locking the same row).
-- Jobs are written only by requests of an authenticated account; removing an account deletes its
-- jobs in the same transaction (src/features/accounts/service.ts removeAccount), which the
-- cascade did before.
ALTER TABLE "jobs" DROP CONSTRAINT IF EXISTS "jobs_owner_id_fkey";
