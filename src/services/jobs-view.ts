// Job rows to the wire format.
import type { Job as JobRow } from '../db/generated/client.ts'
import { isoTime, ref, uri } from '../http/uris.ts'
import type { JobWire } from '../schemas/job.ts'

export function jobToWire (row: JobRow, children: JobWire[] = []): JobWire {
  const data: JobWire['data'] = { progress: row.progress }
  if (row.description) data.description = row.description
  data.bytes_done = Number(row.bytesDone)
  if (row.bytesTotal !== null) data.bytes_total = Number(row.bytesTotal)
  if (row.etaSeconds !== null) data.eta_seconds = row.etaSeconds
  return {
    uuid: row.id,
    resource_uri: uri('jobs', row.id),
    operation: row.operation,
    state: row.state,
    data,
    created: isoTime(row.created)!,
    last_modified: isoTime(row.lastModified)!,
    started_at: isoTime(row.startedAt),
    finished_at: isoTime(row.finishedAt),
    resources: row.resources,
    parent: row.parentId ? ref('jobs', row.parentId) : null,
    error: (row.error as JobWire['error']) ?? null,
    ...(row.result !== null && row.result !== undefined ? { result: row.result } : {}),
    children
  }
}

/** Nests `rows` (a whole tree, any order) under their parents, starting at `rootId`. */
export function buildTree (rows: JobRow[], rootId: string): JobWire | undefined {
  const byParent = new Map<string, JobRow[]>()
  let root: JobRow | undefined
  for (const r of rows) {
    if (r.id === rootId) root = r
    if (r.parentId) {
      const list = byParent.get(r.parentId) ?? []
      list.push(r)
      byParent.set(r.parentId, list)
    }
  }
  const build = (row: JobRow): JobWire => jobToWire(row, (byParent.get(row.id) ?? [])
    .sort((a, b) => a.created.getTime() - b.created.getTime() || a.id.localeCompare(b.id))
    .map(build))
  return root ? build(root) : undefined
}
