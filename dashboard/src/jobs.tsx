// Jobs: one keyset page of top-level jobs (children nested), kept live by the change stream.
import { useEffect, useRef, useState } from 'preact/hooks'
import { api, ok, uuidOf, type Job, type JobList } from './api.ts'
import type { Frame } from './events.ts'
import { bytes, duration, time } from './format.ts'
import { Badge, Cell, Errors, errorsOf, type Hub } from './ui.tsx'
import type { ApiErrorItem } from './api.ts'

const PAGE = 50
const STATES = ['queued', 'started', 'cancelling', 'success', 'error', 'cancelled']
const OPERATIONS = ['drive_create', 'drive_clone', 'drive_resize', 'drive_delete', 'drive_upload', 'drive_download', 'server_clone', 'server_start', 'server_stop', 'server_delete']
const FINISHED = new Set(['success', 'error', 'cancelled'])

interface Speed { bytes: number, at: number, rate?: number }

/** Puts `job` where it belongs in the tree `list` (replacing its old copy); false when its parent is not there. */
function place (list: Job[], job: Job): boolean {
  for (let i = 0; i < list.length; i++) {
    const node = list[i]
    if (node.uuid === job.uuid) {
      list[i] = { ...job, children: job.children ?? node.children }
      return true
    }
    if (job.parent && node.uuid === job.parent.uuid) {
      const children = [...(node.children ?? [])]
      const at = children.findIndex(c => c.uuid === job.uuid)
      if (at >= 0) children[at] = { ...job, children: job.children ?? children[at].children }
      else children.push(job)
      list[i] = { ...node, children }
      return true
    }
    if (node.children?.length) {
      const children = [...node.children]
      if (place(children, job)) { list[i] = { ...node, children }; return true }
    }
  }
  return false
}

/** `expanded` (the rows opened to their details and children) is kept by the caller, so it outlives a tab switch. */
export function JobsView ({ hub, expanded, setExpanded }: { hub: Hub, expanded: Set<string>, setExpanded: (update: (prev: Set<string>) => Set<string>) => void }) {
  const [state, setState] = useState('')
  const [operation, setOperation] = useState('')
  const [cursors, setCursors] = useState<string[]>([''])
  const [jobs, setJobs] = useState<Job[]>([])
  const [meta, setMeta] = useState<JobList['meta']>()
  const [errors, setErrors] = useState<ApiErrorItem[]>()
  const [loading, setLoading] = useState(true)
  const [reloads, setReloads] = useState(0)
  const list = useRef<Job[]>([])
  const speeds = useRef(new Map<string, Speed>())
  const flush = useRef<ReturnType<typeof setTimeout> | undefined>(undefined)
  const firstPage = cursors.length === 1

  useEffect(() => {
    let stale = false
    setLoading(true)
    const query: Record<string, string | number> = { limit: PAGE, cursor: cursors.at(-1) ?? '' }
    if (state) query.state = state
    if (operation) query.operation = operation
    ok(api.GET('/api/2.0/jobs/', { params: { query: query as never } })).then(page => {
      if (stale) return
      list.current = page.objects
      setJobs(page.objects)
      setMeta(page.meta)
      setErrors(undefined)
    }, err => { if (!stale) setErrors(errorsOf(err)) }).finally(() => { if (!stale) setLoading(false) })
    return () => { stale = true }
  }, [state, operation, cursors, reloads])

  // a (re)connected stream may have missed frames: reload the page then
  useEffect(() => hub.onState(s => { if (s === 'live') setReloads(n => n + 1) }), [hub])

  useEffect(() => hub.on((frame: Frame) => {
    if (frame.resource_type !== 'jobs' || !frame.object) return
    const job = frame.object as Job
    const d = job.data
    if (job.uuid && d?.bytes_done !== undefined) {
      const now = performance.now()
      const prev = speeds.current.get(job.uuid)
      if (!prev) speeds.current.set(job.uuid, { bytes: d.bytes_done, at: now })
      else if (d.bytes_done !== prev.bytes && now > prev.at) {
        const r = (d.bytes_done - prev.bytes) / ((now - prev.at) / 1000)
        speeds.current.set(job.uuid, { bytes: d.bytes_done, at: now, rate: prev.rate === undefined ? r : prev.rate * 0.6 + r * 0.4 })
      }
    }
    const next = [...list.current]
    if (!place(next, job)) {
      // a new top-level job shows on the first page when it passes the filters
      if (job.parent || !firstPage) return
      if ((state && job.state !== state) || (operation && job.operation !== operation)) return
      next.unshift(job)
    }
    list.current = next
    // many frames a second (10,000 jobs) collapse into a few renders
    if (!flush.current) flush.current = setTimeout(() => { flush.current = undefined; setJobs(list.current) }, 150)
  }), [hub, firstPage, state, operation])

  useEffect(() => () => clearTimeout(flush.current), [])

  const toggle = (uuid: string) => setExpanded(prev => {
    const s = new Set(prev)
    if (s.has(uuid)) s.delete(uuid)
    else s.add(uuid)
    return s
  })

  const cancel = async (job: Job) => {
    try {
      await ok(api.POST('/api/2.0/jobs/{uuid}/action/', { params: { path: { uuid: job.uuid! }, query: { do: 'cancel' } } }))
    } catch (err) { setErrors(errorsOf(err)) }
  }

  const row = (job: Job, depth: number): preact.JSX.Element[] => {
    const uuid = job.uuid!
    const open = expanded.has(uuid)
    const d = job.data
    const speed = speeds.current.get(uuid)
    const eta = d?.eta_seconds ?? (speed?.rate && d?.bytes_total !== undefined && d.bytes_done !== undefined ? (d.bytes_total - d.bytes_done) / speed.rate : undefined)
    const kids = job.children ?? []
    const out = [
      <tr key={uuid} class={`job depth-${depth}`} data-job={uuid} data-operation={job.operation} data-state={job.state}>
        <Cell label='' class='toggle'>
          <button type='button' class='link' aria-expanded={open} aria-label={open ? 'Collapse' : 'Expand'} onClick={() => toggle(uuid)}>{open ? '▾' : '▸'}</button>
        </Cell>
        <Cell label='Operation'>{job.operation}{kids.length ? <span class='muted'> ({kids.length})</span> : null}</Cell>
        <Cell label='State'><Badge value={job.state} /></Cell>
        <Cell label='Resources'>
          {(job.resources ?? []).map(r => {
            const kind = r.includes('/servers/') ? 'servers' : 'drives'
            return <a key={r} class='resource' href={`#${kind}/${uuidOf(r)}`} title={r}>{kind === 'servers' ? 'server' : 'drive'} {uuidOf(r).slice(0, 8)}</a>
          })}
        </Cell>
        <Cell label='Progress' class='progress-cell'>
          <progress max={100} value={d?.progress ?? 0} aria-label={`progress ${d?.progress ?? 0}%`} />
          <span class='figures'>
            {d?.progress ?? 0}%
            {d?.bytes_total ? <> · {bytes(d.bytes_done ?? 0)} / {bytes(d.bytes_total)}</> : null}
            {speed?.rate && !FINISHED.has(job.state ?? '') ? <> · {bytes(speed.rate)}/s</> : null}
            {eta !== undefined && !FINISHED.has(job.state ?? '') ? <> · ETA {duration(eta)}</> : null}
          </span>
        </Cell>
        <Cell label='Created'>{time(job.created)}</Cell>
        <Cell label='' class='actions'>
          {job.state === 'queued' || job.state === 'started'
            ? <button type='button' class='danger' onClick={() => { void cancel(job) }}>Cancel</button>
            : null}
        </Cell>
      </tr>
    ]
    if (open) {
      const log = d?.log_excerpt
      out.push(
        <tr key={uuid + '-detail'} class={`detail depth-${depth}`}>
          <td colSpan={7}>
            <dl>
              <dt>Job</dt><dd><code>{uuid}</code></dd>
              {d?.description ? <><dt>Description</dt><dd>{d.description}</dd></> : null}
              {job.started_at ? <><dt>Started</dt><dd>{time(job.started_at)}</dd></> : null}
              {job.finished_at ? <><dt>Finished</dt><dd>{time(job.finished_at)}</dd></> : null}
              {job.error ? <><dt>Error</dt><dd class='error-text'>{job.error.error_type}: {job.error.error_message}</dd></> : null}
              {job.result ? <><dt>Result</dt><dd><code>{JSON.stringify(job.result)}</code></dd></> : null}
            </dl>
            {log && log.length > 0 ? <pre class='log' aria-label='Log excerpt'>{log.join('\n')}</pre> : null}
          </td>
        </tr>
      )
      for (const c of kids) out.push(...row(c, depth + 1))
    }
    return out
  }

  const total = meta?.total_count
  return (
    <section>
      <div class='toolbar'>
        <label>State
          <select value={state} onChange={e => { setState((e.target as HTMLSelectElement).value); setCursors(['']) }}>
            <option value=''>any</option>
            {STATES.map(s => <option key={s} value={s}>{s}</option>)}
          </select>
        </label>
        <label>Operation
          <select value={operation} onChange={e => { setOperation((e.target as HTMLSelectElement).value); setCursors(['']) }}>
            <option value=''>any</option>
            {OPERATIONS.map(s => <option key={s} value={s}>{s}</option>)}
          </select>
        </label>
        <span class='muted count'>{loading ? 'loading…' : total !== undefined ? `${meta?.total_count_estimated === true ? 'about ' : ''}${total >= 10000 ? '10,000+' : total.toLocaleString()} jobs` : ''}</span>
        <span class='pager'>
          <button type='button' disabled={firstPage} onClick={() => setCursors(c => c.slice(0, -1))}>‹ Newer</button>
          <span class='muted'>page {cursors.length}</span>
          <button type='button' disabled={!meta?.next_cursor} onClick={() => setCursors(c => [...c, meta!.next_cursor!])}>Older ›</button>
        </span>
      </div>
      <Errors errors={errors} onClose={() => setErrors(undefined)} />
      <table class='jobs'>
        <thead><tr><th /><th>Operation</th><th>State</th><th>Resources</th><th>Progress</th><th>Created</th><th /></tr></thead>
        <tbody>{jobs.flatMap(j => row(j, 0))}</tbody>
      </table>
      {!loading && jobs.length === 0 ? <p class='muted empty'>No jobs.</p> : null}
    </section>
  )
}
