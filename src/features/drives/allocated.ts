// runtime.allocated_size: the bytes a drive's image takes on storage (local: st_blocks * 512 of
// the sparse file; rbd: `rbd du` used size), an extension of the CloudSigma drive object. Asking
// the storage on every read would cost a stat (local) or an `rbd du` (Ceph) per drive and list,
// so the figure is cached in the drive row (allocated_size, allocated_at) and measured again only
// when a read finds it older than the row (updated_at moves when a job ends: create, clone,
// resize, upload) or the drive in a transient status (being written). Null until measured, and
// while the storage cannot tell (no image yet, storage unavailable): a read never fails for it,
// and waits for it at most MEASURE_WAIT_MS.
import { setTimeout as delay } from 'node:timers/promises'
import pLimit from 'p-limit'
import type pg from 'pg'
import type { Drive as DriveRow } from '../../db/generated/client.ts'
import { TRANSIENT_STATUSES } from '../../domain/drive-status.ts'
import type { DriveStorage } from '../../storage/index.ts'

/** Storage calls at once per read (an `rbd du` is a process). */
const PARALLEL = 8
/** The longest a read waits for its measurements (an `rbd info` + `rbd du` takes 50-100 ms). */
export const MEASURE_WAIT_MS = 2000

function stale (row: DriveRow): boolean {
  return row.allocatedAt === null || row.allocatedAt < row.updatedAt || (TRANSIENT_STATUSES as readonly string[]).includes(row.status)
}

/**
 * Measures the rows whose allocated size is missing or stale, stores the figures and sets them on
 * the rows (in place). `allocated_at` records the row version measured (its updated_at), so a job
 * that ends after this read makes the figure stale again.
 *
 * A read waits at most `waitMs` for the storage: a measurement that is not back by then (a Ceph
 * cluster that stalls: its calls fail only after CEPH_OP_TIMEOUT) leaves its row's cached figure
 * as it was, and is still stored when it comes back, for the next read.
 */
export async function refreshAllocated (pool: pg.Pool, storage: DriveStorage | undefined, rows: DriveRow[], waitMs = MEASURE_WAIT_MS): Promise<void> {
  if (!storage) return
  const todo = rows.filter(stale)
  if (todo.length === 0) return
  const limit = pLimit(PARALLEL)
  let answered = false
  const measured = Promise.all(todo.map(row => limit(async () => {
    try {
      const bytes = (await storage.stat(row.id)).allocated
      // rows already answered with are left alone: their figures are only stored
      if (!answered) {
        row.allocatedSize = BigInt(bytes)
        row.allocatedAt = row.updatedAt
      }
      return { row, bytes }
    } catch {
      return undefined
    }
  })))
  const stored = measured.then(async (all) => {
    const done = all.filter(m => m !== undefined)
    if (done.length === 0) return
    // one statement; raw SQL leaves updated_at alone. A late figure never replaces one measured
    // for a newer version of the row. Rows another transaction holds are skipped, not waited for:
    // their cached figure stays stale and the next read measures again. (Concurrent reads of the
    // same rows, as the detail list makes, updated them in different orders and deadlocked: a
    // second each, pool connections held meanwhile, measured under bench:api's mixed load.)
    await pool.query(
      `WITH m AS (SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[]) AS m(id, bytes, version)),
       free AS (
         SELECT d.id FROM drives d JOIN m ON d.id = m.id
         WHERE d.allocated_at IS NULL OR d.allocated_at <= m.version
         ORDER BY d.id FOR NO KEY UPDATE OF d SKIP LOCKED
       )
       UPDATE drives d SET allocated_size = m.bytes, allocated_at = m.version
       FROM m JOIN free f ON f.id = m.id
       WHERE d.id = f.id AND (d.allocated_at IS NULL OR d.allocated_at <= m.version)`,
      [done.map(m => m.row.id), done.map(m => String(m.bytes)), done.map(m => m.row.updatedAt.toISOString())]
    )
  }).catch(() => {})
  const timer = new AbortController()
  const inTime = await Promise.race([
    stored.then(() => true),
    delay(waitMs, false, { signal: timer.signal }).catch(() => true)
  ])
  timer.abort()
  if (!inTime) answered = true
}
