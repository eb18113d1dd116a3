-- runtime.allocated_size: bytes a drive's image takes on storage, measured on read and cached here
ALTER TABLE "drives" ADD COLUMN     "allocated_at" TIMESTAMPTZ(6),
ADD COLUMN     "allocated_size" BIGINT;
