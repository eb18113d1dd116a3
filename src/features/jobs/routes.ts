// /api/2.0/jobs/: list (offset or keyset paging), detail, one job with nested children and
// ?wait=N, cancel, schema.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { errors } from '../../http/errors.ts'
import { isUuid } from '../../http/bodies.ts'
import { envelope, pickFields, planList, parseFields, type ListPlan } from '../../http/listing.ts'
import type { Total } from '../../http/list-sql.ts'
import { describeResource } from '../../http/resource-schema.ts'
import { isStorableDate, type FilterSpec, type OrderSpec } from '../../domain/filters.ts'
import { requestCancel } from '../../engine/cancel.ts'
import { formatLogLine, LOG_MAX_LINES, readLog } from '../../engine/log.ts'
import { FINISHED_STATES, JOB_STATES, OPERATIONS, type JobState } from '../../engine/types.ts'
import { UuidParams, errorResponses, refTo, ResourceSchema } from '../../http/schemas.ts'
import { JOB_FIELDS, Job, JobActionQuery, JobData, JobError, JobGetQuery, JobList, JobListMeta, JobListQuery, JobLogQuery } from './schemas.ts'
import { loadJobWire, loadTrees } from './view.ts'
import { getJobWireSql, keysetPageSql, listJobsSql, treesByIdsSql, type Keyset } from './read-sql.ts'

export const jobFilters: FilterSpec = {
  state: { column: 'state', kind: 'string', choices: JOB_STATES },
  operation: { column: 'operation', kind: 'string', choices: OPERATIONS },
  uuid: { column: 'id', kind: 'uuid' },
  parent: { column: 'parentId', kind: 'uuid' },
  resource: { column: 'links', kind: 'uuid', build: (v) => ({ links: { some: { resourceId: v.toLowerCase() } } }) },
  created: { column: 'created', kind: 'date' },
  last_modified: { column: 'lastModified', kind: 'date' },
  finished_at: { column: 'finishedAt', kind: 'date' }
}

export const jobOrder: OrderSpec = {
  fields: { last_modified: 'lastModified', created: 'created', state: 'state', operation: 'operation', uuid: 'id' },
  default: '-last_modified'
}

/** The last job of a page: its key at the column's microsecond precision, and its id. */
interface Cursor { k: string, id: string }

// the key as keysetPageSql reads it: UTC, six fractional digits (a millisecond cursor of an
// earlier version is refused: it would skip or repeat the jobs of its millisecond)
const CURSOR_KEY = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/

/** A cursor page holds at most this many jobs (`limit=0` or more is this, with a next_cursor when there are more). */
export const CURSOR_PAGE_MAX = 1000

function encodeCursor (c: Cursor): string {
  return Buffer.from(JSON.stringify(c)).toString('base64url')
}

function decodeCursor (raw: string): Cursor {
  try {
    const c = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as Cursor
    if (typeof c.k === 'string' && typeof c.id === 'string' && isUuid(c.id) && CURSOR_KEY.test(c.k) && isStorableDate(c.k) &&
      // a real instant (Date.parse takes February 31 or 24:00, PostgreSQL does not)
      new Date(c.k).toISOString().slice(0, 23) === c.k.slice(0, 23)) return { k: c.k, id: c.id }
  } catch {}
  throw errors.validation('cursor is not one this API gave out', 'cursor')
}

/**
 * Keyset paging works when ordering by one date column. The id tiebreak runs opposite to it so
 * the top-level jobs' (owner_id, <date> DESC, id) indexes serve both directions: `plan` is settled
 * so (the list SQL reads it as settled; tests call this to plan as the route does).
 */
export function keysetOf (plan: ListPlan): Keyset | undefined {
  const first = plan.orderBy[0]
  const column = Object.keys(first ?? {})[0]
  if (plan.orderBy.length !== 2 || (column !== 'lastModified' && column !== 'created') || !('id' in plan.orderBy[1])) return undefined
  const dir = first[column]
  plan.orderBy[1] = { id: dir === 'desc' ? 'asc' : 'desc' }
  return { column, dir }
}

const jobs: FastifyPluginAsyncTypebox = async (app) => {
  app.events.registerLoader('jobs', (p, ownerId, id) => loadJobWire(p, ownerId, id))
  for (const s of [JobData, JobError, Job, JobListMeta, JobList]) app.addSchema(s)

  const list = async (query: Record<string, unknown> & { cursor?: string }, ownerId: string) => {
    const plan = planList(query, jobFilters, jobOrder, JOB_FIELDS)
    // top-level jobs only unless the caller filters by parent
    const where: Record<string, unknown> = { ...plan.where, ownerId, ...(query.parent === undefined ? { parentId: null } : {}) }
    const keyset = keysetOf(plan)
    if (query.cursor !== undefined) {
      if (!keyset) throw errors.validation('cursor paging needs order_by on one of last_modified or created', 'cursor')
    }
    if (query.cursor === undefined) {
      const fast = await listJobsSql(app.dbPool, ownerId, query, plan, jobFilters)
      if (fast) return fast
    }
    // keyset pages: the page's ids and keys by SQL, which compares the keys at the microsecond the
    // columns hold (through Prisma a Date would cut them to the millisecond, and jobs written in
    // one millisecond would be skipped or repeated)
    let keyed: { keys: Array<{ id: string, k: string }>, total: Total } | undefined
    let take = plan.take
    if (query.cursor !== undefined && keyset) {
      const after = query.cursor ? decodeCursor(query.cursor) : undefined
      take = Math.min(plan.take ?? CURSOR_PAGE_MAX, CURSOR_PAGE_MAX)
      keyed = await keysetPageSql(app.dbPool, ownerId, query, take, jobFilters, keyset, after)
      if (!keyed) throw errors.validation('cursor paging does not support these filters', 'cursor')
    }
    // keyset paging counted with its page, at most EXACT_COUNT_UP_TO or from the counters (keysetPageSql), so every page stays fast on millions
    // of jobs; its trees in one statement, in the keys' order (a job purged in between leaves a
    // page shorter, not the cursor). An offset page here (a filter only Prisma compiles, such as
    // __contains) counts every match.
    const keys = keyed?.keys
    const [total, trees] = keyed
      ? [keyed.total.total, await treesByIdsSql(app.dbPool, ownerId, keyed.keys.map(r => r.id))]
      : await Promise.all([
        app.prisma.job.count({ where }),
        app.prisma.job.findMany({ where, orderBy: plan.orderBy, skip: plan.offset, take }).then(async rows => await loadTrees(app.prisma, rows))
      ])
    const last = keys?.at(-1)
    const more = take !== undefined && keys !== undefined && keys.length === take
    const out = envelope(plan, total, trees)
    return {
      meta: {
        ...out.meta,
        offset: query.cursor !== undefined ? 0 : out.meta.offset,
        ...(keyed?.total.estimated ? { total_count_estimated: true as const } : {}),
        // only for clients that page by cursor (`cursor=` empty on the first page)
        ...(query.cursor !== undefined
          ? { next_cursor: last && more ? encodeCursor({ k: last.k, id: last.id }) : null }
          : {})
      },
      objects: out.objects
    }
  }

  // the app is stopping: waits (?wait=N) end, and their answers go out before the pool closes
  let stopping = false
  app.addHook('preClose', async () => { stopping = true })

  const listSchema = (summary: string) => ({
    tags: ['jobs'],
    summary,
    querystring: JobListQuery,
    response: { 200: refTo(JobList), ...errorResponses() }
  })

  app.get('/jobs/', { schema: listSchema('List top-level jobs with their children') }, async (request) => list(request.query, request.account.id))
  app.get('/jobs/detail/', { schema: listSchema('List jobs with all fields') }, async (request) => list(request.query, request.account.id))

  app.get('/jobs/schema/', { schema: { tags: ['jobs'], summary: 'The job resource schema', response: { 200: refTo(ResourceSchema), ...errorResponses() } } }, async () => describeResource(Job, {
    readonly: Object.keys(Job.properties),
    required: [],
    filtering: { state: 1, operation: 1, uuid: 1, resource: 1, parent: 1, created: 1, last_modified: 1, finished_at: 1 },
    ordering: ['-last_modified'],
    detailMethods: ['get'],
    listMethods: ['get']
  }))

  app.get('/jobs/:uuid/', {
    schema: {
      tags: ['jobs'],
      summary: 'One job with its children; ?wait=N answers when it finishes or after N seconds',
      params: UuidParams,
      querystring: JobGetQuery,
      response: { 200: refTo(Job), ...errorResponses(404) }
    }
  }, async (request) => {
    const { uuid } = request.params
    const fields = parseFields(request.query.fields, JOB_FIELDS)
    let job = await getJobWireSql(app.dbPool, request.account.id, uuid)
    if (!job) throw errors.notFound('Job', 'uuid')
    const deadline = Date.now() + (request.query.wait ?? 0) * 1000
    // a client gone, or the app stopping, ends the wait (within the 1 s below)
    const over = () => stopping || request.raw.socket?.destroyed === true
    while (!FINISHED_STATES.includes(job.state as JobState) && Date.now() < deadline && !over()) {
      // woken by the job's change events; the 1 s cap covers a missed NOTIFY
      await app.events.waitForChange(uuid, Math.min(1000, deadline - Date.now()))
      job = await getJobWireSql(app.dbPool, request.account.id, uuid)
      if (!job) throw errors.notFound('Job', 'uuid')
    }
    return pickFields(job, fields) as never
  })

  // followers of running jobs' logs end when the app closes, so a stop does not wait on them
  const followers = new Set<() => void>()
  app.addHook('preClose', async () => { for (const end of followers) end() })

  app.get('/jobs/:uuid/log/', {
    config: { produces: ['text/plain'] },
    schema: {
      tags: ['jobs'],
      summary: 'The job\'s log as text; ?follow=1 streams it until the job finishes',
      description: 'One line per entry: ISO time, [attempt], the line the handler wrote (what it copies and how, the time each step took, ' +
        `the cause of an error). The last ${LOG_MAX_LINES} lines of each job are kept; they go with the job when it is purged. ` +
        'With follow=1 the answer stays open while the job runs, sends new lines as they are written and ends when the job finishes.',
      params: UuidParams,
      querystring: JobLogQuery,
      response: {
        200: {
          description: 'The log lines (text/plain)',
          content: { 'text/plain': { schema: { type: 'string' } } }
        },
        ...errorResponses(404)
      }
    }
  }, async (request, reply) => {
    const { uuid } = request.params
    const ownerId = request.account.id
    const stateOf = async () => (await app.prisma.job.findFirst({ where: { id: uuid, ownerId }, select: { state: true } }))?.state
    const first = await stateOf()
    if (first === undefined) throw errors.notFound('Job', 'uuid')
    const follow = request.query.follow === '1' || request.query.follow === 'true'
    if (!follow || FINISHED_STATES.includes(first as JobState)) {
      const lines = await readLog(app.prisma, uuid)
      return reply.type('text/plain; charset=utf-8').send(lines.map(formatLogLine).join(''))
    }
    reply.hijack()
    const res = reply.raw
    res.writeHead(200, {
      'content-type': 'text/plain; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      'x-accel-buffering': 'no',
      'x-request-id': request.id
    })
    const stream = { closed: false }
    const end = () => { if (!stream.closed) { stream.closed = true; res.end() } }
    followers.add(end)
    request.raw.on('close', () => { stream.closed = true; followers.delete(end) })
    let after = 0n
    const drain = async () => {
      for (;;) {
        const lines = await readLog(app.prisma, uuid, after, 500)
        if (lines.length > 0) {
          after = lines.at(-1)!.id
          if (!stream.closed) res.write(lines.map(formatLogLine).join(''))
        }
        if (lines.length < 500) return
      }
    }
    try {
      for (;;) {
        if (stream.closed) break
        // woken by the job's change events and log NOTIFYs (listening before reading, so none is
        // missed in between); the 5 s cap covers a NOTIFY lost with a reconnect
        const woken = app.events.waitForJobOrLog(uuid, 5000)
        // the job's state first: lines written before it finished are all stored by then
        const state = await stateOf()
        await drain()
        if (state === undefined || FINISHED_STATES.includes(state as JobState)) break
        await woken
      }
    } catch (err) {
      request.log.warn({ err }, 'following a job log failed')
    }
    followers.delete(end)
    end()
  })

  app.post('/jobs/:uuid/action/', {
    schema: {
      tags: ['jobs'],
      summary: 'Cancel a job and its children (do=cancel)',
      params: UuidParams,
      querystring: JobActionQuery,
      response: { 202: refTo(Job), ...errorResponses(404) }
    }
  }, async (request, reply) => {
    const { uuid } = request.params
    const ownerId = request.account.id
    await app.prisma.$transaction(async (tx) => {
      const row = await tx.job.findFirst({ where: { id: uuid, ownerId }, select: { state: true } })
      if (!row) throw errors.notFound('Job', 'uuid')
      if (FINISHED_STATES.includes(row.state as JobState)) throw errors.validation(`The job is ${row.state} already`, 'state')
      await requestCancel(tx, [uuid])
    })
    const job = await loadJobWire(app.prisma, ownerId, uuid)
    if (!job) throw errors.notFound('Job', 'uuid')
    return reply.code(202).send(job as never)
  })
}

export default jobs
