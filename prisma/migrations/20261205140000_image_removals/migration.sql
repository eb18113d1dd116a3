-- Images that must be removed from storage: written in the transaction that makes them nobody's
-- (a cleanup deleting its drive row), deleted once the image is gone. A cleanup deletes the image
-- right after its commit; when that fails (or the process dies first), the sweeper retries, with
-- backoff, until it succeeds (src/features/drives/image-removals.ts).
CREATE TABLE "image_removals" (
  "image_id" UUID NOT NULL,
  "reason" TEXT NOT NULL,
  "attempts" INTEGER NOT NULL DEFAULT 0,
  "last_error" TEXT,
  "next_try_at" TIMESTAMPTZ(6) NOT NULL DEFAULT now(),
  "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT now(),
  CONSTRAINT "image_removals_pkey" PRIMARY KEY ("image_id")
);

CREATE INDEX "image_removals_next_try_at_idx" ON "image_removals"("next_try_at");

-- A drive row made with the id of an image to remove owns that image again: its record goes in the
-- inserting transaction. The sweeper holds the record's row lock while it checks that no drive row
-- exists and deletes the image, so an insert of that id waits here until the image is gone (and
-- its own image, made after its row, comes later); an insert that got here first has taken the
-- record, and the sweeper skips it.
CREATE FUNCTION "image_removals_owned_again"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM image_removals WHERE image_id = NEW.id;
  RETURN NULL;
END $$;

CREATE TRIGGER "drives_own_image" AFTER INSERT ON "drives"
  FOR EACH ROW EXECUTE FUNCTION image_removals_owned_again();
