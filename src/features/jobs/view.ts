// Job rows to the wire format: nested trees with the parents' progress rolled up from their
// children, and the `{resource_uri, uuid}` job links that drives and servers show.
import type { PrismaClient, Tx } from '../../db/client.ts'
import type { Job as JobRow } from '../../db/generated/client.ts'
import { rollUp, type ProgressNode } from '../../domain/progress.ts'
import { isoTime, ref, uri, type Ref } from '../../http/uris.ts'
import type { JobWire } from './schemas.ts'

type Times = 'created' | 'lastModified' | 'startedAt' | 'finishedAt'

/**
 * The columns a job's wire object is made of; its times as Dates (Prisma) or already as their
 * wire text (isoTime's; the SQL reads), the same in every row of one tree.
 */
export type WireJobRow = Pick<JobRow, 'id' | 'operation' | 'state' | 'parentId' | 'rootId' | 'result' | 'error' | 'resources' | 'progress' |
'description' | 'extra' | 'logTail' | 'bytesDone' | 'bytesTotal' | 'etaSeconds'> & { [K in Times]: JobRow[K] | string }

const shownTime = (d: Date | string | null): string | null => typeof d === 'string' ? d : isoTime(d)
/** Creation order of two rows of one tree: wire texts (fixed width, UTC) compare as their times do. */
const byCreated = (a: WireJobRow, b: WireJobRow): number =>
  typeof a.created === 'string' && typeof b.created === 'string'
    ? (a.created < b.created ? -1 : a.created > b.created ? 1 : 0)
    : new Date(a.created).getTime() - new Date(b.created).getTime()

export function jobToWire (row: WireJobRow, children: JobWire[] = [], childNodes: ProgressNode[] = []): JobWire {
  const p = rollUp({ ...nodeOf(row), children: childNodes })
  const data: JobWire['data'] = { progress: p.progress }
  if (p.description) data.description = p.description
  data.bytes_done = p.bytesDone
  if (p.bytesTotal !== null) data.bytes_total = p.bytesTotal
  if (p.etaSeconds !== null) data.eta_seconds = p.etaSeconds
  if (row.extra !== null && typeof row.extra === 'object') data.extra = row.extra as Record<string, unknown>
  if (row.logTail && row.logTail.length > 0) data.log_excerpt = row.logTail
  return {
    uuid: row.id,
    resource_uri: uri('jobs', row.id),
    operation: row.operation,
    state: row.state,
    data,
    created: shownTime(row.created)!,
    last_modified: shownTime(row.lastModified)!,
    started_at: shownTime(row.startedAt),
    finished_at: shownTime(row.finishedAt),
    resources: row.resources,
    parent: row.parentId ? ref('jobs', row.parentId) : null,
    error: (row.error as JobWire['error']) ?? null,
    ...(row.result !== null && row.result !== undefined ? { result: row.result } : {}),
    children
  }
}

function nodeOf (row: WireJobRow): ProgressNode {
  return {
    state: row.state,
    progress: row.progress,
    bytesDone: Number(row.bytesDone),
    bytesTotal: row.bytesTotal === null ? null : Number(row.bytesTotal),
    etaSeconds: row.etaSeconds,
    description: row.description,
    children: []
  }
}

/** Nests `rows` (a whole tree, any order) under their parents, starting at `rootId`. */
export function buildTree (rows: WireJobRow[], rootId: string): JobWire | undefined {
  const byParent = new Map<string, WireJobRow[]>()
  let root: WireJobRow | undefined
  for (const r of rows) {
    if (r.id === rootId) root = r
    if (r.parentId) {
      const list = byParent.get(r.parentId) ?? []
      list.push(r)
      byParent.set(r.parentId, list)
    }
  }
  const build = (row: WireJobRow): { wire: JobWire, node: ProgressNode } => {
    const kids = (byParent.get(row.id) ?? [])
      .sort((a, b) => byCreated(a, b) || a.id.localeCompare(b.id))
      .map(build)
    const node = { ...nodeOf(row), children: kids.map(k => k.node) }
    return { wire: jobToWire(row, kids.map(k => k.wire), node.children), node }
  }
  return root ? build(root).wire : undefined
}

/** One job of `ownerId` with its nested children, or undefined (missing or another account's). */
export async function loadJobWire (prisma: PrismaClient | Tx, ownerId: string, id: string): Promise<JobWire | undefined> {
  const row = await prisma.job.findFirst({ where: { id, ownerId } })
  if (!row) return undefined
  const tree = await prisma.job.findMany({ where: { rootId: row.rootId } })
  return buildTree(tree, row.id)
}

/** Many top-level jobs with their trees, in the order given, in two queries. */
export async function loadTrees (prisma: PrismaClient | Tx, rows: JobRow[]): Promise<JobWire[]> {
  const roots = rows.map(r => r.rootId)
  const all = roots.length === 0
    ? []
    : await prisma.job.findMany({ where: { rootId: { in: [...new Set(roots)] }, NOT: { id: { in: rows.map(r => r.id) } } } })
  const byRoot = new Map<string, JobRow[]>()
  for (const r of all) {
    const list = byRoot.get(r.rootId) ?? []
    list.push(r)
    byRoot.set(r.rootId, list)
  }
  return rows.map(r => buildTree([r, ...(byRoot.get(r.rootId) ?? [])], r.id) ?? jobToWire(r))
}

/**
 * The `jobs` field of drives or servers: for each id, links to the jobs that touch it (through
 * job_resources), newest first. Purged jobs are gone from job_resources too.
 */
export async function jobRefsFor (prisma: PrismaClient | Tx, type: 'drives' | 'servers', ids: string[]): Promise<Map<string, Ref[]>> {
  const out = new Map<string, Ref[]>(ids.map(id => [id, []]))
  if (ids.length === 0) return out
  const rows = await prisma.$queryRaw<Array<{ resource_id: string, job_id: string }>>`
    SELECT r.resource_id::text, j.id::text AS job_id FROM job_resources r JOIN jobs j ON j.id = r.job_id
    WHERE r.resource_type = ${type} AND r.resource_id = ANY(${ids}::uuid[])
    ORDER BY j.created DESC, j.id`
  for (const r of rows) out.get(r.resource_id)?.push(ref('jobs', r.job_id))
  return out
}
