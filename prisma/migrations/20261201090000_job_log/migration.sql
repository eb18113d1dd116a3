-- Job logs (job_log, bounded per job, deleted with the job), the log excerpt and progress detail of
-- a job (log_tail, extra), and the kind of each change event (added, changed, removed).

-- AlterTable
ALTER TABLE "jobs" ADD COLUMN     "extra" JSONB,
ADD COLUMN     "log_tail" TEXT[] DEFAULT ARRAY[]::TEXT[];

-- AlterTable
ALTER TABLE "events" ADD COLUMN     "change" TEXT NOT NULL DEFAULT 'changed';

-- CreateTable
CREATE TABLE "job_log" (
    "id" BIGSERIAL NOT NULL,
    "job_id" UUID NOT NULL,
    "attempt" INTEGER NOT NULL,
    "at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "line" TEXT NOT NULL,

    CONSTRAINT "job_log_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "job_log_job_id_id_idx" ON "job_log"("job_id", "id");

-- AddForeignKey
ALTER TABLE "job_log" ADD CONSTRAINT "job_log_job_id_fkey" FOREIGN KEY ("job_id") REFERENCES "jobs"("id") ON DELETE CASCADE ON UPDATE CASCADE;

