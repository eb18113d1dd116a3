-- CreateSchema
CREATE SCHEMA IF NOT EXISTS "public";

-- CreateTable
CREATE TABLE "accounts" (
    "id" UUID NOT NULL,
    "email" TEXT NOT NULL,
    "password_hash" TEXT NOT NULL,
    "clone_naming" TEXT NOT NULL DEFAULT 'NONE',
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "accounts_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "drives" (
    "id" UUID NOT NULL,
    "owner_id" UUID NOT NULL,
    "name" TEXT NOT NULL,
    "size" BIGINT NOT NULL,
    "media" TEXT NOT NULL,
    "status" TEXT NOT NULL,
    "storage_type" TEXT NOT NULL,
    "allow_multimount" BOOLEAN NOT NULL DEFAULT false,
    "affinities" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "meta" JSONB NOT NULL DEFAULT '{}',
    "tags" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "iops" INTEGER,
    "readers" INTEGER NOT NULL DEFAULT 0,
    "locked_by_job" UUID,
    "deleted" BOOLEAN NOT NULL DEFAULT false,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "drives_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "servers" (
    "id" UUID NOT NULL,
    "owner_id" UUID NOT NULL,
    "name" TEXT NOT NULL,
    "cpu" INTEGER NOT NULL,
    "mem" BIGINT NOT NULL,
    "smp" INTEGER NOT NULL DEFAULT 1,
    "vnc_password" TEXT NOT NULL,
    "status" TEXT NOT NULL DEFAULT 'stopped',
    "active_since" TIMESTAMPTZ(6),
    "meta" JSONB NOT NULL DEFAULT '{}',
    "tags" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "nics" JSONB NOT NULL DEFAULT '[]',
    "extra" JSONB NOT NULL DEFAULT '{}',
    "locked_by_job" UUID,
    "deleted" BOOLEAN NOT NULL DEFAULT false,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "servers_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "server_drives" (
    "server_id" UUID NOT NULL,
    "drive_id" UUID NOT NULL,
    "device" TEXT NOT NULL,
    "dev_channel" TEXT NOT NULL,
    "boot_order" INTEGER,
    "position" INTEGER NOT NULL DEFAULT 0,

    CONSTRAINT "server_drives_pkey" PRIMARY KEY ("server_id","device","dev_channel")
);

-- CreateTable
CREATE TABLE "jobs" (
    "id" UUID NOT NULL,
    "owner_id" UUID NOT NULL,
    "operation" TEXT NOT NULL,
    "state" TEXT NOT NULL DEFAULT 'queued',
    "parent_id" UUID,
    "root_id" UUID NOT NULL,
    "params" JSONB NOT NULL DEFAULT '{}',
    "result" JSONB,
    "error" JSONB,
    "resources" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "progress" INTEGER NOT NULL DEFAULT 0,
    "description" TEXT,
    "bytes_done" BIGINT NOT NULL DEFAULT 0,
    "bytes_total" BIGINT,
    "eta_seconds" INTEGER,
    "checkpoint" JSONB,
    "priority" INTEGER NOT NULL DEFAULT 0,
    "run_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "max_attempts" INTEGER NOT NULL DEFAULT 3,
    "locked_by" TEXT,
    "locked_until" TIMESTAMPTZ(6),
    "cancel_requested" BOOLEAN NOT NULL DEFAULT false,
    "created" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "last_modified" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "started_at" TIMESTAMPTZ(6),
    "finished_at" TIMESTAMPTZ(6),

    CONSTRAINT "jobs_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "job_resources" (
    "job_id" UUID NOT NULL,
    "resource_type" TEXT NOT NULL,
    "resource_id" UUID NOT NULL,
    "mode" TEXT NOT NULL DEFAULT 'write',

    CONSTRAINT "job_resources_pkey" PRIMARY KEY ("job_id","resource_type","resource_id")
);

-- CreateTable
CREATE TABLE "upload_chunks" (
    "drive_id" UUID NOT NULL,
    "number" INTEGER NOT NULL,
    "size" BIGINT NOT NULL,
    "received_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "upload_chunks_pkey" PRIMARY KEY ("drive_id","number")
);

-- CreateTable
CREATE TABLE "transfer_links" (
    "token_hash" TEXT NOT NULL,
    "owner_id" UUID NOT NULL,
    "drive_id" UUID NOT NULL,
    "job_id" UUID,
    "purpose" TEXT NOT NULL,
    "chunk_number" INTEGER,
    "chunk_size" BIGINT,
    "expires_at" TIMESTAMPTZ(6) NOT NULL,
    "used_at" TIMESTAMPTZ(6),
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "transfer_links_pkey" PRIMARY KEY ("token_hash")
);

-- CreateTable
CREATE TABLE "events" (
    "id" BIGSERIAL NOT NULL,
    "owner_id" UUID NOT NULL,
    "resource_type" TEXT NOT NULL,
    "resource_id" TEXT NOT NULL,
    "resource_uri" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "events_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "settings" (
    "key" TEXT NOT NULL,
    "value" TEXT NOT NULL,

    CONSTRAINT "settings_pkey" PRIMARY KEY ("key")
);

-- CreateIndex
CREATE UNIQUE INDEX "accounts_email_key" ON "accounts"("email");

-- CreateIndex
CREATE INDEX "drives_owner_id_name_idx" ON "drives"("owner_id", "name");

-- CreateIndex
CREATE INDEX "drives_owner_id_created_at_idx" ON "drives"("owner_id", "created_at");

-- CreateIndex
CREATE INDEX "servers_owner_id_name_idx" ON "servers"("owner_id", "name");

-- CreateIndex
CREATE INDEX "server_drives_drive_id_idx" ON "server_drives"("drive_id");

-- CreateIndex
CREATE INDEX "jobs_state_run_at_idx" ON "jobs"("state", "run_at");

-- CreateIndex
CREATE INDEX "jobs_owner_id_last_modified_id_idx" ON "jobs"("owner_id", "last_modified" DESC, "id");

-- CreateIndex
CREATE INDEX "jobs_owner_id_created_id_idx" ON "jobs"("owner_id", "created" DESC, "id");

-- CreateIndex
CREATE INDEX "jobs_parent_id_idx" ON "jobs"("parent_id");

-- CreateIndex
CREATE INDEX "jobs_root_id_idx" ON "jobs"("root_id");

-- CreateIndex
CREATE INDEX "jobs_finished_at_idx" ON "jobs"("finished_at");

-- CreateIndex
CREATE INDEX "job_resources_resource_type_resource_id_idx" ON "job_resources"("resource_type", "resource_id");

-- CreateIndex
CREATE INDEX "transfer_links_expires_at_idx" ON "transfer_links"("expires_at");

-- CreateIndex
CREATE INDEX "events_owner_id_id_idx" ON "events"("owner_id", "id");

-- CreateIndex
CREATE INDEX "events_created_at_idx" ON "events"("created_at");

-- AddForeignKey
ALTER TABLE "drives" ADD CONSTRAINT "drives_owner_id_fkey" FOREIGN KEY ("owner_id") REFERENCES "accounts"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "servers" ADD CONSTRAINT "servers_owner_id_fkey" FOREIGN KEY ("owner_id") REFERENCES "accounts"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "server_drives" ADD CONSTRAINT "server_drives_server_id_fkey" FOREIGN KEY ("server_id") REFERENCES "servers"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "server_drives" ADD CONSTRAINT "server_drives_drive_id_fkey" FOREIGN KEY ("drive_id") REFERENCES "drives"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_owner_id_fkey" FOREIGN KEY ("owner_id") REFERENCES "accounts"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_parent_id_fkey" FOREIGN KEY ("parent_id") REFERENCES "jobs"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "job_resources" ADD CONSTRAINT "job_resources_job_id_fkey" FOREIGN KEY ("job_id") REFERENCES "jobs"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "upload_chunks" ADD CONSTRAINT "upload_chunks_drive_id_fkey" FOREIGN KEY ("drive_id") REFERENCES "drives"("id") ON DELETE CASCADE ON UPDATE CASCADE;

