-- dev_channel in its canonical form, controller:unit as plain decimals ('00:01' is '0:1'), the form
-- the API now stores and compares (canonicalChannel in src/features/servers/mounts.ts). Mounts
-- written before kept the form given, so one slot could hold two drives written two ways; and a
-- clone copies its source's mounts as stored. A mount whose slot another mount of the same server
-- and device holds in another form is left as written (which drive keeps the slot is the
-- account's to say, by a PUT of the server's drives, which then refuses the pair).
WITH c AS (
  SELECT "server_id", "device", "dev_channel",
         (split_part("dev_channel", ':', 1)::numeric)::text || ':' || (split_part("dev_channel", ':', 2)::numeric)::text AS canonical
  FROM "server_drives"
  WHERE "dev_channel" ~ '^[0-9]+:[0-9]+$'
), alone AS (
  SELECT "server_id", "device", canonical FROM c GROUP BY "server_id", "device", canonical HAVING count(*) = 1
)
UPDATE "server_drives" d
SET "dev_channel" = c.canonical
FROM c JOIN alone USING ("server_id", "device", canonical)
WHERE d."server_id" = c."server_id" AND d."device" = c."device" AND d."dev_channel" = c."dev_channel"
  AND c."dev_channel" <> c.canonical;
