// The job reads as one SQL statement each (issue 18): a page of top-level jobs with their whole
// trees and its count (capped, or the account's counters), or one job's tree, without Prisma's query compiler.
import type pg from 'pg'
import { escapeLike, parseFilters, type FilterSpec } from '../../domain/filters.ts'
import { isUuid } from '../../http/bodies.ts'
import { EXACT_COUNT_UP_TO, Params, cappedCountSql, filtersToSql, jsonWireTime, listMeta, orderToSql, pageToSql, sqlRows, truthfulTotal, type SqlFilter, type Total } from '../../http/list-sql.ts'
import { pickFields, type ListPlan } from '../../http/listing.ts'
import { FINISHED_STATES } from '../../engine/types.ts'
import type { JobWire } from './schemas.ts'
import { buildTree, jobToWire, type WireJobRow } from './view.ts'

const COLUMNS: Record<string, string> = {
  id: 'j.id',
  state: 'j.state',
  operation: 'j.operation',
  parentId: 'j.parent_id',
  created: 'j.created',
  lastModified: 'j.last_modified',
  finishedAt: 'j.finished_at'
}

const CUSTOM: Record<string, SqlFilter> = {
  resource: (v, _op, p) => `EXISTS (SELECT 1 FROM job_resources r WHERE r.job_id = j.id AND r.resource_id = ${p.add(v.toLowerCase())}::uuid)`,
  // success as the literal that jobs_top_owner_success_idx's predicate names: a generic plan of a
  // prepared statement uses a partial index only when its WHERE implies the predicate without
  // the parameters' values (deep success pages skip their offset there, no state test per entry)
  state: (v, op, p) => op !== 'exact' ? undefined : v === 'success' ? 'j.state = \'success\'' : `j.state = ${p.add(v)}`
}

// only what the wire object shows: params, checkpoint and the lease columns stay in the database;
// in this order in a row's JSON array (toRow)
const COLS = ['id', 'operation', 'state', 'parent_id', 'root_id', 'result', 'error', 'resources', 'progress', 'description', 'extra', 'log_tail', 'bytes_done', 'bytes_total', 'eta_seconds', 'created', 'last_modified', 'started_at', 'finished_at']
// bigints as text in the JSON: a JSON number would lose what is past 2^53
const AS_TEXT = new Set(['bytes_done', 'bytes_total'])
const colsOf = (alias: string) => COLS.map(c => AS_TEXT.has(c) ? `${alias}.${c}::text AS ${c}` : `${alias}.${c}`).join(', ')
/**
 * The rows of the WITH item `page` (child false) and every other job of their trees (child true),
 * found by arrays of ids (= ANY (ARRAY(...))), not IN (subquery): a connection's cached generic
 * plan, which every account then runs, knows no page size and guessed thousands, for which it
 * hashed the page and read the whole jobs table for the children (50,000 rows for a page of 20,
 * in list-offset.test.ts)
 */
const PAGE_AND_TREES = `
  SELECT false AS child, j.* FROM page j
  UNION ALL
  SELECT true, ${colsOf('j')} FROM jobs j WHERE j.root_id = ANY (ARRAY(SELECT root_id FROM page)) AND j.id <> ALL (ARRAY(SELECT id FROM page))`

/**
 * The rows of `alias` (COLS, and `child`) as one JSON array of arrays, `ordered` if given, the
 * statement's column `rows`. pg then hands a page over as one JSON text for JSON.parse, not a
 * value per column and row for its parsers, and an array per row leaves out the keys that
 * objects would repeat (bench:api, issue 18: the service's CPU per jobs-list request 452-611 µs
 * against 570-802 µs as columns; README's bench table).
 */
const rowsAgg = (alias: string, child: string, ordered = '') =>
  `json_agg(json_build_array(${child}, ${COLS.map(c => `${alias}.${c}`).join(', ')})${ordered === '' ? '' : ` ORDER BY ${ordered}`}) AS rows`

/** A job row as rowsAgg writes it: whether a child of the page, then COLS in their order. */
type RowArray = [child: boolean, id: string, operation: string, state: string, parentId: string | null, rootId: string, result: unknown,
  error: unknown, resources: string[], progress: number, description: string | null, extra: unknown, logTail: string[] | null,
  bytesDone: string, bytesTotal: string | null, etaSeconds: number | null,
  // as PostgreSQL writes times in JSON (jsonWireTime makes them wire text)
  created: string, lastModified: string, startedAt: string | null, finishedAt: string | null]

const rowArrays = async (pool: pg.Pool, text: string, values: unknown[]): Promise<RowArray[]> =>
  (await sqlRows<{ rows: RowArray[] | null }>(pool, text, values))[0]?.rows ?? []

function toRow (a: RowArray): WireJobRow {
  const [, id, operation, state, parentId, rootId, result, error, resources, progress, description, extra, logTail, bytesDone, bytesTotal, etaSeconds, created, lastModified, startedAt, finishedAt] = a
  return {
    id,
    operation,
    state,
    parentId,
    rootId,
    result: result as WireJobRow['result'],
    error: error as WireJobRow['error'],
    resources,
    progress,
    description,
    extra: extra as WireJobRow['extra'],
    logTail: logTail ?? [],
    bytesDone: BigInt(bytesDone),
    bytesTotal: bytesTotal === null ? null : BigInt(bytesTotal),
    etaSeconds,
    created: jsonWireTime(created),
    lastModified: jsonWireTime(lastModified),
    startedAt: startedAt === null ? null : jsonWireTime(startedAt),
    finishedAt: finishedAt === null ? null : jsonWireTime(finishedAt)
  }
}

/**
 * A count of an account's top-level jobs filtered by state or operation only looks at the
 * newest COUNT_WINDOW of them (by last_modified). Counting up to EXACT_COUNT_UP_TO matches is
 * cheap when they are common, but a rare state (say `started`) among a million jobs made the
 * count read the whole list (79.5-103 ms a page in bench/jobs-list.ts; 28-30 ms with the
 * window, issue 18). When the account has more top-level jobs than the window and at most
 * EXACT_COUNT_UP_TO of them matched inside it, the total is the planner's estimate (at least
 * the matches counted), flagged in meta. Lists that fit in the window, unfiltered lists and
 * other filters (which have their own indexes: resource, the dates) count exactly up to
 * EXACT_COUNT_UP_TO as before.
 */
export const COUNT_WINDOW = 100_000

/**
 * How a list's total is counted: `all` the account's top-level jobs, unfiltered, from their
 * counters (job_top_counts, kept by triggers: a sum of at most 8 rows, exact at any size);
 * `windowed` (see COUNT_WINDOW); otherwise `capped` at EXACT_COUNT_UP_TO + 1 matches.
 */
type Counting = 'all' | 'windowed' | 'capped'

function countingOf (query: Record<string, unknown>, spec: FilterSpec, filters: string[]): Counting {
  if (query.parent !== undefined) return 'capped'
  if (filters.length === 0) return 'all'
  return parseFilters(query, spec).every(c => c.field === spec.state || c.field === spec.operation) ? 'windowed' : 'capped'
}

/**
 * The WITH item `counted` (total, partial): the sum of the account's top-level counters, the
 * capped count of the matches of `where`, or for a windowed count, of the matches of `filters`
 * among the newest COUNT_WINDOW top-level jobs, read from the top-level index alone (it carries
 * state and operation) and stopping at the cap; row COUNT_WINDOW + 1, when there is one, marks
 * the count partial.
 */
function countedSql (owner: string, where: string, filters: string[], counting: Counting): string {
  if (counting === 'all') return `counted AS MATERIALIZED (SELECT coalesce(sum(c.n), 0)::float8 AS total, false AS partial FROM job_top_counts c WHERE c.owner_id = ${owner}::uuid)`
  if (counting === 'capped') return `counted AS MATERIALIZED (SELECT ${cappedCountSql('jobs j', where)} AS total, false AS partial)`
  return `counted AS MATERIALIZED (
    SELECT (count(*) FILTER (WHERE n <= ${COUNT_WINDOW}))::int AS total, coalesce(bool_or(n > ${COUNT_WINDOW}), false) AS partial FROM (
      SELECT n FROM (
        SELECT j.state, j.operation, row_number() OVER () AS n FROM (
          SELECT j.state, j.operation FROM jobs j WHERE j.owner_id = ${owner}::uuid AND j.parent_id IS NULL
          ORDER BY j.last_modified DESC, j.id LIMIT ${COUNT_WINDOW + 1}) j
      ) j WHERE (${filters.join(' AND ')} AND n <= ${COUNT_WINDOW}) OR n > ${COUNT_WINDOW} LIMIT ${EXACT_COUNT_UP_TO + 2}
    ) capped)`
}

async function countJobs (pool: pg.Pool, counted: string, values: unknown[]): Promise<{ total: number, partial: boolean }> {
  return (await sqlRows<{ total: number, partial: boolean }>(pool, `WITH ${counted} SELECT total, partial FROM counted`, values))[0]
}

/**
 * GET /jobs/ with offset paging: the page, every job of the page's trees (as loadTrees) and the
 * capped count in one statement; undefined when a filter needs the Prisma path. `plan.orderBy`
 * is the one the route settled (its id tiebreak runs opposite to the date, as the indexes do).
 */
export async function listJobsSql (pool: pg.Pool, ownerId: string, query: Record<string, unknown>, plan: ListPlan, spec: FilterSpec) {
  const p = new Params()
  const owner = p.add(ownerId)
  const filters = filtersToSql(query, spec, COLUMNS, p, CUSTOM)
  if (!filters) return undefined
  // top-level jobs only unless the caller filters by parent
  const where = [`j.owner_id = ${owner}::uuid`, ...(query.parent === undefined ? ['j.parent_id IS NULL'] : []), ...filters].join(' AND ')
  const whereValues = [...p.values]
  const order = orderToSql(plan.orderBy, COLUMNS)
  const counting = countingOf(query, spec, filters)
  const counted = countedSql(owner, where, filters, counting)
  // the page's ids first, from the index alone: a deep offset skips index entries, not table rows
  // (on the top-level indexes, jobs_top_owner_*_idx, an index-only scan), and from SEEK_FROM on,
  // where it can, only those of the ten minutes holding the page (seekIdsSql); then those rows by id
  // (an array, as PAGE_AND_TREES looks up theirs) and their trees, as one JSON array; the count
  // beside it, also for an empty page
  const seek = seekOf(query, spec, plan, counting)
  const ids = seek === undefined
    ? `ids AS MATERIALIZED (SELECT j.id FROM jobs j WHERE ${where} ORDER BY ${order} ${pageToSql(plan, p, true)})`
    : seekIdsSql(owner, where, order, seek, plan, p)
  const [count] = await sqlRows<{ total: number, partial: boolean, rows: RowArray[] | null }>(pool, `
    WITH ${counted},
    ${ids},
    page AS MATERIALIZED (SELECT ${colsOf('j')} FROM jobs j WHERE j.id = ANY (ARRAY(SELECT id FROM ids)))
    SELECT (SELECT total FROM counted) AS total, (SELECT partial FROM counted) AS partial,
      (SELECT ${rowsAgg('j', 'j.child', `j.child, ${order}`)} FROM (${PAGE_AND_TREES}) j) AS rows`, p.values)
  const total = counting === 'all' ? { total: count.total, estimated: false } : await truthfulTotal(pool, count.total, 'jobs j', where, whereValues, count.partial)
  return { meta: listMeta(plan, total), objects: treesOf(count.rows ?? []).map(o => pickFields(o, plan.fields)) }
}

/**
 * Offset pages from this deep on, in last_modified or created order (of the unfiltered list or
 * one filtered to finished states only, operations, or both), seek the ten minutes of that
 * column that hold their first row instead of skipping the offset (issue 18): skipping 500,000
 * index entries took 50-110 ms on these machines, the whole page with a seek 3-11 ms
 * (bench/jobs-list.ts).
 * This depth is where the two cost the same with 10,000 open jobs, whose rows the seek reads: at
 * offset 20,000 of a million jobs the seek and ids took 2.8-5.0 ms, the skip 2.6-3.6 ms (0.9-2.1 ms
 * for the seek with no open job; psql, 2026-12-06).
 */
export const SEEK_FROM = 20_000

/**
 * How an offset page deep enough (see SEEK_FROM) seeks: the `column` of its order, `dir`, the
 * finished `states` it is filtered to (`state=success`, `state=error,cancelled`) and the
 * `operations` (`operation=drive_clone`), if any. Other filters skip their offset.
 */
interface Seek { column: 'last_modified' | 'created', dir: 'desc' | 'asc', states?: string[], operations?: string[] }

function seekOf (query: Record<string, unknown>, spec: FilterSpec, plan: ListPlan, counting: Counting): Seek | undefined {
  if (plan.offset < SEEK_FROM || plan.orderBy.length !== 2 || !('id' in plan.orderBy[1]) || query.parent !== undefined) return undefined
  const [field, dir] = Object.entries(plan.orderBy[0])[0]
  if ((field !== 'lastModified' && field !== 'created') || (dir !== 'desc' && dir !== 'asc')) return undefined
  const column = field === 'created' ? 'created' : 'last_modified'
  if (counting === 'all') return { column, dir }
  // at most one exact state filter, of finished states only, and one exact operation filter
  const conditions = parseFilters(query, spec)
  const state = conditions.filter(c => c.field === spec.state)
  const operation = conditions.filter(c => c.field === spec.operation)
  if (state.length + operation.length !== conditions.length || state.length > 1 || operation.length > 1 ||
    ![...state, ...operation].every(c => c.op === 'exact') || !(state[0]?.values ?? []).every(v => (FINISHED_STATES as string[]).includes(v))) return undefined
  return {
    column,
    dir,
    ...(state.length === 1 ? { states: [...new Set(state[0].values)] } : {}),
    ...(operation.length === 1 ? { operations: [...new Set(operation[0].values)] } : {})
  }
}

/**
 * The WITH items `seek` and `ids` of a deep offset page of an account's top-level jobs in
 * `column`'s order (`where`: the account's top-level jobs, in `states` and `operations` if
 * given). `seek`: the bucket (ten minutes of the column, job_list_bucket) holding row `offset` of
 * the list, and how many rows the buckets before it in the list's order hold. Counted by triggers
 * (prisma/migrations/20261206100000_job_list_buckets, 20261206130000_job_list_operations,
 * 20261206170000_job_list_created_operations, 20261206190000_job_list_created_finished): in
 * created order every job, per operation, by job_top_created, or for a list of finished states
 * the finished jobs, per state and operation, by job_top_created_finished (and its `_tx`, the
 * transactions' counts not folded into it yet: foldListCounters); in last_modified order the
 * finished jobs, per state and operation, by job_top_finished (and job_top_finished_tx), and
 * unless the list is of finished states only, the open ones (whose last_modified still moves) of
 * its operations, read from jobs_top_open_idx. `ids`: the page, skipping only `offset - before`
 * entries from the start of that bucket. The counters and the jobs are read in one snapshot, so
 * the page is the plain query's; an offset past the end finds no bucket and an empty page.
 */
function seekIdsSql (owner: string, where: string, order: string, { column, dir, states, operations }: Seek, plan: ListPlan, p: Params): string {
  const offset = p.add(plan.offset)
  const desc = dir === 'desc' ? 'DESC' : 'ASC'
  const statesParam = states === undefined ? '' : p.add(states)
  const operationsParam = operations === undefined ? '' : p.add(operations)
  const inOperations = (alias: string) => operations === undefined ? '' : ` AND ${alias}.operation = ANY (${operationsParam}::text[])`
  const inFilters = (alias: string) => (states === undefined ? '' : ` AND ${alias}.state = ANY (${statesParam}::text[])`) + inOperations(alias)
  // the finished jobs' counters of the column, folded and not yet
  const finished = (table: string) => `SELECT f.bucket, f.n FROM ${table} f WHERE f.owner_id = ${owner}::uuid${inFilters('f')}
            UNION ALL
            SELECT f.bucket, f.n FROM ${table}_tx f WHERE f.owner_id = ${owner}::uuid${inFilters('f')}`
  const counted = column === 'created'
    ? states === undefined
      ? `SELECT c.bucket, c.n FROM job_top_created c WHERE c.owner_id = ${owner}::uuid${inOperations('c')}`
      : finished('job_top_created_finished')
    : `${finished('job_top_finished')}
            ${states !== undefined
              ? ''
              // the open jobs' last_modified still moves: read from their index (which carries the
              // operation), unless the list is of finished states only
              : `UNION ALL
            SELECT job_list_bucket(o.last_modified), 1 FROM jobs o
            WHERE o.owner_id = ${owner}::uuid AND o.parent_id IS NULL AND o.state IN ('queued', 'started', 'cancelling')${inOperations('o')}`}`
  const from = dir === 'desc'
    ? `j.${column} < job_list_bucket_end((SELECT bucket FROM seek))`
    : `j.${column} >= (SELECT bucket FROM seek)`
  return `seek AS MATERIALIZED (
      SELECT b.bucket, b.before FROM (
        SELECT bucket, n, (sum(n) OVER (ORDER BY bucket ${desc}) - n)::int8 AS before FROM (
          SELECT bucket, sum(n)::int8 AS n FROM (
            ${counted}
          ) x GROUP BY bucket
        ) g
      ) b WHERE b.before + b.n > ${offset}::int8 ORDER BY b.bucket ${desc} LIMIT 1),
    ids AS MATERIALIZED (SELECT j.id FROM jobs j WHERE ${where} AND ${from}
      ORDER BY ${order} ${plan.take === undefined ? '' : `LIMIT ${p.add(plan.take)}`} OFFSET (SELECT ${offset}::int8 - before FROM seek))`
}

/** The top-level rows (child false) in their order, each as the tree its child rows make, as loadTrees. */
function treesOf (rows: RowArray[]): JobWire[] {
  const byRoot = new Map<string, WireJobRow[]>()
  const top: WireJobRow[] = []
  for (const a of rows) {
    const r = toRow(a)
    if (!a[0]) { top.push(r); continue }
    const list = byRoot.get(r.rootId) ?? []
    list.push(r)
    byRoot.set(r.rootId, list)
  }
  return top.map(r => buildTree([r, ...(byRoot.get(r.rootId) ?? [])], r.id) ?? jobToWire(r))
}

/**
 * The trees of `ownerId`'s jobs `ids` (a keyset page), in the order of `ids`, in one statement as
 * an offset page reads its rows; a job purged since its id was read is left out.
 */
export async function treesByIdsSql (pool: pg.Pool, ownerId: string, ids: string[]): Promise<JobWire[]> {
  if (ids.length === 0) return []
  const rows = await rowArrays(pool, `
    WITH page AS MATERIALIZED (SELECT ${colsOf('j')} FROM jobs j WHERE j.id = ANY ($1::uuid[]) AND j.owner_id = $2::uuid)
    SELECT ${rowsAgg('j', 'j.child')} FROM (${PAGE_AND_TREES}) j`, [ids, ownerId])
  const at = new Map(ids.map((id, i) => [id, i]))
  const top = rows.filter(a => !a[0]).sort((a, b) => at.get(a[1])! - at.get(b[1])!)
  return treesOf([...top, ...rows.filter(a => a[0])])
}

// the cursor path: __contains too (the filter's values are its choices; ILIKE as Prisma's mode:
// 'insensitive', with LIKE's wildcards escaped as the Prisma path escapes them), so every jobs filter compiles
const likeContains = (column: string): SqlFilter => (v, op, p) =>
  op === 'contains' ? `${column} ILIKE ${p.add('%' + escapeLike(v) + '%')}` : op === 'exact' ? `${column} = ${p.add(v)}` : undefined
const KEYSET_CUSTOM: Record<string, SqlFilter> = { ...CUSTOM, state: likeContains('j.state'), operation: likeContains('j.operation') }

/**
 * A keyset key as the column holds it, to the microsecond ('2026-01-01T00:00:00.123401Z'): a JS
 * Date keeps milliseconds, so jobs written in the same millisecond would compare equal to it.
 */
const keyText = (column: string) => `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`

export interface Keyset { column: 'lastModified' | 'created', dir: 'asc' | 'desc' }

/**
 * The ids of one keyset page of `ownerId`'s jobs, in order, each with its key at full
 * (microsecond) precision: the page after `after` (the previous page's last key and id), or the
 * first. Ordered by the date, the id tiebreak opposite to it (the top-level indexes' order).
 * With it, in parallel, the total as cursor pages give it: exact at any size for the account's
 * unfiltered top-level jobs (their counters); otherwise exact up to EXACT_COUNT_UP_TO, then
 * that number; an estimate (flagged, up to that number) where the offset path's count is
 * windowed (filtered, and more top-level jobs than the window). undefined when a filter does not compile.
 */
export async function keysetPageSql (pool: pg.Pool, ownerId: string, query: Record<string, unknown>, take: number | undefined, spec: FilterSpec, keyset: Keyset, after: { k: string, id: string } | undefined): Promise<{ keys: Array<{ id: string, k: string }>, total: Total } | undefined> {
  const p = new Params()
  const owner = p.add(ownerId)
  const filters = filtersToSql(query, spec, COLUMNS, p, KEYSET_CUSTOM)
  if (!filters) return undefined
  const col = COLUMNS[keyset.column]
  const desc = keyset.dir === 'desc'
  const terms = [`j.owner_id = ${owner}::uuid`, ...(query.parent === undefined ? ['j.parent_id IS NULL'] : []), ...filters]
  const where = terms.join(' AND ')
  const whereValues = [...p.values]
  const counting = countingOf(query, spec, filters)
  const countedNow = countJobs(pool, countedSql(owner, where, filters, counting), whereValues)
  if (after) {
    const k = p.add(after.k)
    // the plain bound (<= or >=) lets the index range-scan; the OR then settles ties by id
    terms.push(`${col} ${desc ? '<=' : '>='} ${k}::timestamptz`, `(${col} ${desc ? '<' : '>'} ${k}::timestamptz OR j.id ${desc ? '>' : '<'} ${p.add(after.id.toLowerCase())}::uuid)`)
  }
  const [keys, counted] = await Promise.all([sqlRows<{ id: string, k: string }>(pool, `
    SELECT j.id, ${keyText(col)} AS k FROM jobs j WHERE ${terms.join(' AND ')}
    ORDER BY ${col} ${desc ? 'DESC' : 'ASC'}, j.id ${desc ? 'ASC' : 'DESC'}${take === undefined ? '' : ` LIMIT ${p.add(take)}`}`, p.values), countedNow])
  if (counting === 'all') return { keys, total: { total: counted.total, estimated: false } }
  const total = counted.partial && counted.total <= EXACT_COUNT_UP_TO
    ? await truthfulTotal(pool, counted.total, 'jobs j', where, whereValues, true)
    : { total: counted.total, estimated: false }
  return { keys, total: { total: Math.min(total.total, EXACT_COUNT_UP_TO), estimated: total.estimated } }
}

/** One job of `ownerId` with its nested children, or undefined, as loadJobWire. */
export async function getJobWireSql (pool: pg.Pool, ownerId: string, id: string): Promise<JobWire | undefined> {
  if (!isUuid(id)) return undefined
  const rows = await rowArrays(pool, `SELECT ${rowsAgg('c', 'false')} FROM (SELECT ${colsOf('c')} FROM jobs c WHERE c.root_id = (SELECT root_id FROM jobs WHERE id = $1::uuid AND owner_id = $2::uuid)) c`, [id.toLowerCase(), ownerId])
  return buildTree(rows.map(toRow), id.toLowerCase())
}
