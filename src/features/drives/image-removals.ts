// Images that must go from storage because nothing owns them any more. A cleanup deletes its drive
// row through the attempt's fence first and the image only after that commit (a stale attempt never
// reaches an image the newer attempt owns); the record written in that same transaction keeps the
// image from being forgotten when the delete then fails or the process dies before it: the
// sweeper retries it, with backoff, until it is gone.
//
// An image is removed only while its record is locked (FOR UPDATE) and no drive row of its id
// exists. A drive row inserted with that id takes the record in its own transaction (the trigger
// drives_own_image): it waits for a removal under way to commit, and its image is made after its
// row, so it is never the one removed; a record it took is never swept.
import type { FastifyBaseLogger } from 'fastify'
import type pg from 'pg'
import fp from 'fastify-plugin'
import pLimit, { type LimitFunction } from 'p-limit'
import { Gauge, Registry } from 'prom-client'
import type { PrismaClient, Tx } from '../../db/client.ts'
import { isStorageError, type DriveStorage } from '../../storage/index.ts'

export interface ImageRemovalDeps {
  prisma: PrismaClient
  storage: DriveStorage
  log: FastifyBaseLogger
}

export interface SweepResult {
  /** images deleted */
  removed: number
  /** records dropped because a drive row of the id exists again */
  owned: number
  /** deletes that failed (the records wait for their next try) */
  failed: number
}

type Outcome = { kind: 'none' } | { kind: 'removed' | 'owned', id: string } | { kind: 'failed', id: string, err: unknown }

// a removal holds its record's lock while the storage deletes (rbd: seconds, bounded by CEPH_OP_TIMEOUT)
const REMOVAL_TIMEOUT_MS = 10 * 60_000
/** Retries wait 10 s, doubling, at most an hour. */
const BACKOFF_SQL = 'least(interval \'1 hour\', interval \'10 seconds\' * power(2, least(attempts, 9)))'

const CLAIM_DUE = `
  SELECT image_id::text AS id FROM image_removals WHERE next_try_at <= now()
  ORDER BY next_try_at LIMIT 1 FOR UPDATE SKIP LOCKED`
// the immediate path skips a record the sweeper holds: it is removing that image now
const CLAIM_ONE = 'SELECT image_id::text AS id FROM image_removals WHERE image_id = $1::uuid FOR UPDATE SKIP LOCKED'
const OWNED = 'SELECT EXISTS (SELECT 1 FROM drives WHERE id = $1::uuid) AS owned'
const DONE = 'DELETE FROM image_removals WHERE image_id = $1::uuid'
const RETRY_LATER = `
  UPDATE image_removals SET attempts = attempts + 1, last_error = $2, next_try_at = now() + ${BACKOFF_SQL}
  WHERE image_id = $1::uuid`

/**
 * How long an image made before its drive row (an upload's) may wait for that row's commit before
 * the sweeper may remove it. The row's insert takes the record (drives_own_image) as it commits;
 * until then the image is made (a storage call, bounded) and one short transaction runs.
 */
const INTENT_GRACE = "interval '15 minutes'"
const INTENT_SQL = `
  INSERT INTO image_removals (image_id, reason, next_try_at) VALUES ($1::uuid, $2, now() + ${INTENT_GRACE})
  ON CONFLICT (image_id) DO NOTHING`

/**
 * Records, before an image is made whose drive row is inserted only after it (an upload's new
 * drive), that the image must go unless that row commits: the row's insert takes the record (the
 * trigger drives_own_image), and a process that dies in between leaves the image to the sweeper,
 * after INTENT_GRACE. One statement on the pg pool (the uploads' hot path).
 */
export async function recordImageIntent (pool: pg.Pool, id: string, reason: string): Promise<void> {
  await pool.query({ name: 'clonejobs_image_intent', text: INTENT_SQL, values: [id, reason] })
}

/**
 * Records that the images `ids` must be removed, in the transaction that deletes their drive rows
 * (after the deletes). An id whose drive row still exists is not recorded: its image is owned.
 * A record already there is due again at once.
 */
export async function recordImageRemovals (tx: Tx, ids: string[], reason: string): Promise<void> {
  if (ids.length === 0) return
  await tx.$executeRaw`
    INSERT INTO image_removals AS r (image_id, reason)
    SELECT x.id, ${reason} FROM unnest(${ids.map(id => id.toLowerCase())}::uuid[]) AS x(id)
    WHERE NOT EXISTS (SELECT 1 FROM drives d WHERE d.id = x.id)
    ORDER BY x.id
    ON CONFLICT (image_id) DO UPDATE SET reason = EXCLUDED.reason, next_try_at = now()`
}

/**
 * How many removals of one database client hold a transaction at once. Each holds one of the pool's
 * connections while its storage deletes: on rbd `rbd` processes, retried for up to 45 s while a
 * dead client's watch on the image lasts (after a host died mid-upload, every taken-over cleanup
 * waits so). Without a bound, a burst of such cleanups held every connection of the pool, and every
 * request waited for one. The others wait here, holding none.
 */
export const REMOVALS_AT_ONCE = 2
const removalSlots = new WeakMap<object, LimitFunction>()

/** One record (`id`, or the next due one), settled in its own transaction (see REMOVALS_AT_ONCE). */
async function settleOne (deps: ImageRemovalDeps, id?: string): Promise<Outcome> {
  let slots = removalSlots.get(deps.prisma)
  if (slots === undefined) removalSlots.set(deps.prisma, slots = pLimit(REMOVALS_AT_ONCE))
  return slots(() => settleOneNow(deps, id))
}

async function settleOneNow (deps: ImageRemovalDeps, id?: string): Promise<Outcome> {
  return deps.prisma.$transaction(async (tx) => {
    // the storage call runs inside the transaction: the session's idle limit must not end it
    await tx.$executeRawUnsafe('SET LOCAL idle_in_transaction_session_timeout = \'15min\'')
    const claimed = id === undefined
      ? await tx.$queryRawUnsafe<Array<{ id: string }>>(CLAIM_DUE)
      : await tx.$queryRawUnsafe<Array<{ id: string }>>(CLAIM_ONE, id.toLowerCase())
    if (claimed.length === 0) return { kind: 'none' }
    const image = claimed[0].id
    const [{ owned }] = await tx.$queryRawUnsafe<Array<{ owned: boolean }>>(OWNED, image)
    if (!owned) {
      try {
        await deps.storage.delete(image)
      } catch (err) {
        await tx.$executeRawUnsafe(RETRY_LATER, image, err instanceof Error ? err.message : String(err))
        return { kind: 'failed', id: image, err }
      }
    }
    await tx.$executeRawUnsafe(DONE, image)
    return { kind: owned ? 'owned' : 'removed', id: image }
  }, { timeout: REMOVAL_TIMEOUT_MS })
}

/**
 * Removes the recorded images `ids` now (after the commit that recorded them) and drops their
 * records. A delete that fails leaves its record to the sweeper and is logged; a storage that
 * cannot be reached (retryable) is then thrown, so a job's cleanup is retried as before.
 */
export async function removeRecordedImages (deps: ImageRemovalDeps, ids: string[]): Promise<void> {
  let retryable: unknown
  for (const id of ids) {
    const r = await settleOne(deps, id)
    if (r.kind !== 'failed') continue
    deps.log.error({ err: r.err, image: r.id }, 'could not remove an image whose drive is gone; the sweeper retries it')
    if (isStorageError(r.err) && r.err.retryable) retryable ??= r.err
  }
  if (retryable !== undefined) throw retryable
}

/**
 * Removes the image `id` made by a stale attempt (taken over between its fence and its final write)
 * if its drive's row is gone: the newer attempt failed and cleaned up before the image existed, so
 * nothing else would remove it. Recorded first (one statement, nothing when the row exists: the
 * image is then the newer attempt's), so a failed delete is retried by the sweeper. Never throws.
 */
export async function removeOrphanImage (deps: ImageRemovalDeps, id: string, reason: string): Promise<void> {
  try {
    await deps.prisma.$transaction(async (tx) => { await recordImageRemovals(tx, [id], reason) })
    await removeRecordedImages(deps, [id])
  } catch (err) {
    deps.log.warn({ err, image: id }, 'could not remove the image a stale attempt made')
  }
}

/**
 * Retries the due records, one transaction each, at most `limit`; stops early when `signal` aborts.
 * Records other processes hold are skipped (SKIP LOCKED), so every process may sweep.
 */
export async function sweepImageRemovals (deps: ImageRemovalDeps, opts: { limit?: number, signal?: AbortSignal } = {}): Promise<SweepResult> {
  const result: SweepResult = { removed: 0, owned: 0, failed: 0 }
  for (let i = 0; i < (opts.limit ?? 500) && opts.signal?.aborted !== true; i++) {
    const r = await settleOne(deps)
    if (r.kind === 'none') break
    if (r.kind === 'failed') {
      result.failed++
      deps.log.warn({ err: r.err, image: r.id }, 'the sweeper could not remove an image; it retries later')
    } else {
      result[r.kind]++
    }
  }
  if (result.removed + result.owned + result.failed > 0) deps.log.info(result, 'image removal sweep')
  return result
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Retries the due image removals now (the sweeper's loop calls it too). */
    sweepImageRemovals: (opts?: { limit?: number }) => Promise<SweepResult>
    /** clonejobs_image_removals{state}: records waiting (due now, or backing off after a failure) */
    imageRemovalMetrics: Registry
  }
}

export interface ImageSweeperOptions {
  /** false: no loop runs here (tests call app.sweepImageRemovals by hand). */
  run: boolean
}

/** The sweeper: every `imageSweepSeconds`, one sweep at a time; stopped (and awaited) before the app closes. */
export const imageSweeper = fp<ImageSweeperOptions>(async (app, opts) => {
  const log = app.log.child({ component: 'image-removals' })
  // read at call time, so a test or bench that swaps app.storage is honoured
  const deps = (): ImageRemovalDeps => ({ prisma: app.prisma, storage: app.storage, log })
  const stop = new AbortController()
  app.decorate('sweepImageRemovals', (o?: { limit?: number }) => sweepImageRemovals(deps(), { ...o, signal: stop.signal }))
  const registry = new Registry()
  const pending = new Gauge({
    name: 'clonejobs_image_removals',
    help: 'Images whose drives are gone, waiting for removal: due now, or backing off after a failed delete',
    labelNames: ['state'] as const,
    registers: [],
    async collect () {
      const [r] = await app.prisma.$queryRaw<Array<{ due: number, backoff: number }>>`
        SELECT count(*) FILTER (WHERE next_try_at <= now())::int AS due, count(*) FILTER (WHERE next_try_at > now())::int AS backoff FROM image_removals`
      this.set({ state: 'due' }, r.due)
      this.set({ state: 'backoff' }, r.backoff)
    }
  })
  registry.registerMetric(pending)
  app.decorate('imageRemovalMetrics', registry)
  if (!opts.run) return
  let timer: NodeJS.Timeout | undefined
  let running: Promise<void> | undefined
  const schedule = (): void => {
    timer = setTimeout(() => {
      running = sweepImageRemovals(deps(), { signal: stop.signal })
        .then(() => {}, (err: unknown) => { log.error({ err }, 'image removal sweep failed') })
        .finally(() => {
          running = undefined
          if (!stop.signal.aborted) schedule()
        })
    }, app.config.imageSweepSeconds * 1000)
  }
  app.addHook('onReady', async () => { schedule() })
  // before the storage and the database close: the sweep in flight ends after its current record
  app.addHook('preClose', async () => {
    stop.abort()
    clearTimeout(timer)
    await running
  })
}, { name: 'image-removals', dependencies: ['prisma', 'storage'] })
