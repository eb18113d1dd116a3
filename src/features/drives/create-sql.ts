// POST /drives/ as one SQL statement (issue 18): the drives, their drive_create jobs and job links,
// the change events (jobs first, then drives, as before) and the NOTIFYs that wake the workers and
// the event hubs (the events in runs: a few NOTIFYs per batch, not one per event), in one round
// trip on the shared pg pool. One statement is one transaction: all or nothing, as the Prisma
// transaction of nine round trips it replaces, but a pool connection is held for one round trip
// instead of nine, so creates no longer starve the reads of connections.
import type pg from 'pg'
import { publishEventsSql } from '../../engine/events.ts'
import { CHANNELS } from '../../engine/listener.ts'
import { sqlRows } from '../../http/list-sql.ts'
import { uri } from '../../http/uris.ts'
import type { DriveCreateInputT, DriveWire } from './schemas.ts'
import { driveToWire, planDriveCreates } from './service.ts'
import { toRow, type Row } from './read-sql.ts'

// Data-modifying CTEs always run; the SELECT ones (the NOTIFYs) run because the final SELECT reads
// them. Foreign keys are checked at the end of the statement, so job_resources may name the jobs
// inserted beside them.
const CREATE = `
  WITH d AS (
    INSERT INTO drives (id, owner_id, name, size, media, status, storage_type, allow_multimount, affinities, meta, tags, iops, locked_by_job, created_at, updated_at)
    SELECT x.id, $1::uuid, x.name, x.size, x.media, 'creating', x.st, x.am,
           ARRAY(SELECT jsonb_array_elements_text(x.aff::jsonb)), x.meta::jsonb, ARRAY(SELECT jsonb_array_elements_text(x.tags::jsonb)),
           x.iops, x.job, $2::timestamptz, $2::timestamptz
    FROM unnest($3::uuid[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::bool[], $9::text[], $10::text[], $11::text[], $12::int[], $13::uuid[])
      WITH ORDINALITY AS x(id, name, size, media, st, am, aff, meta, tags, iops, job, n)
    ORDER BY x.n
    RETURNING *
  ), j AS (
    INSERT INTO jobs (id, owner_id, operation, state, params, root_id, resources, description, run_at, max_attempts, created, last_modified)
    SELECT x.job, $1::uuid, 'drive_create', 'queued', x.params::jsonb, x.job, ARRAY[x.uri], x.descr, $2::timestamptz, 3, $2::timestamptz, $2::timestamptz
    FROM unnest($13::uuid[], $14::text[], $15::text[], $16::text[]) WITH ORDINALITY AS x(job, params, uri, descr, n)
    ORDER BY x.n
    RETURNING id
  ), r AS (
    INSERT INTO job_resources (job_id, resource_type, resource_id, mode)
    SELECT x.job, 'drives', x.id, 'write' FROM unnest($13::uuid[], $3::uuid[]) AS x(job, id)
    RETURNING job_id
  ), ${publishEventsSql(`
    SELECT $1::uuid AS owner_id, x.t AS resource_type, x.r AS resource_id, 'added' AS change
    FROM unnest($17::text[], $18::text[]) WITH ORDINALITY AS x(t, r, n)
    ORDER BY x.n`)}
  SELECT d.*, (SELECT count(*) FROM j) AS jobs, (SELECT count(*) FROM r) AS links, (SELECT n FROM notified) AS events,
         (SELECT pg_notify('${CHANNELS.jobs}', $19)) AS woke
  FROM d`

/** Creates the drives (checked first: all or none) and their drive_create jobs; answers their wire objects in input order. */
export async function createDrivesSql (pool: pg.Pool, driveMaxSize: number, ownerId: string, inputs: DriveCreateInputT[]): Promise<DriveWire[]> {
  const planned = planDriveCreates(driveMaxSize, inputs)
  if (planned.length === 0) return []
  // a JS Date, as Prisma wrote these columns: millisecond precision, like every other row's
  const now = new Date().toISOString()
  const rows = await sqlRows<Row>(pool, CREATE, [
    ownerId, now,
    planned.map(p => p.id), planned.map(p => p.name), planned.map(p => String(p.size)), planned.map(p => p.media),
    planned.map(p => p.storageType), planned.map(p => p.allowMultimount), planned.map(p => JSON.stringify(p.affinities)),
    planned.map(p => JSON.stringify(p.meta)), planned.map(p => JSON.stringify(p.tags)), planned.map(p => p.iops), planned.map(p => p.jobId),
    planned.map(p => JSON.stringify({ driveId: p.id, size: p.size })), planned.map(p => uri('drives', p.id)),
    planned.map(p => `creating a ${p.size} byte drive`),
    [...planned.map(() => 'jobs'), ...planned.map(() => 'drives')], [...planned.map(p => p.jobId), ...planned.map(p => p.id)],
    planned[0].jobId
  ])
  const byId = new Map(rows.map(r => [r.id, toRow(r)]))
  return planned.map(p => driveToWire(byId.get(p.id)!, { jobIds: [p.jobId], serverIds: [] }))
}
