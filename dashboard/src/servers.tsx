// Servers: the list with live status, create (with disks to attach), start/stop, clone, delete.
import { useEffect, useState } from 'preact/hooks'
import { api, ok, type ApiErrorItem, type Drive, type Server } from './api.ts'
import type { Frame } from './events.ts'
import { bytes } from './format.ts'
import { Badge, Cell, Errors, errorsOf, type Hub } from './ui.tsx'

const MiB = 1024 * 1024

function password (): string {
  const a = new Uint8Array(12)
  crypto.getRandomValues(a)
  return Array.from(a, b => 'abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789'[b % 57]).join('')
}

export function ServersView ({ hub, focus }: { hub: Hub, focus?: string }) {
  const [servers, setServers] = useState<Server[]>([])
  const [free, setFree] = useState<Drive[]>([])
  const [errors, setErrors] = useState<ApiErrorItem[]>()
  const [loading, setLoading] = useState(true)
  const [cloning, setCloning] = useState<{ uuid: string, name: string }>()
  const [reloads, setReloads] = useState(0)

  useEffect(() => {
    let stale = false
    Promise.all([
      ok(api.GET('/api/2.0/servers/detail/', { params: { query: { limit: 0 } } })),
      ok(api.GET('/api/2.0/drives/detail/', { params: { query: { limit: 0 } } }))
    ]).then(([s, d]) => {
      if (stale) return
      setServers(s.objects)
      setFree(d.objects.filter(x => x.status === 'unmounted' || x.media === 'cdrom'))
      setLoading(false)
    }, err => { if (!stale) { setErrors(errorsOf(err)); setLoading(false) } })
    return () => { stale = true }
  }, [reloads])

  useEffect(() => hub.onState(s => { if (s === 'live') setReloads(n => n + 1) }), [hub])
  useEffect(() => hub.on((frame: Frame) => {
    const uuid = frame.resource_uri.split('/').filter(Boolean).at(-1)
    if (frame.resource_type === 'drives') {
      const d = frame.object as Drive | undefined
      setFree(list => {
        const rest = list.filter(x => x.uuid !== uuid)
        return d && (d.status === 'unmounted' || d.media === 'cdrom') ? [...rest, d] : rest
      })
      return
    }
    if (frame.resource_type !== 'servers') return
    setServers(list => {
      const at = list.findIndex(s => s.uuid === uuid)
      if (frame.change === 'removed' || !frame.object) return at < 0 ? list : list.filter(s => s.uuid !== uuid)
      const server = frame.object as Server
      if (at < 0) return [server, ...list]
      const next = [...list]
      next[at] = server
      return next
    })
  }), [hub])

  useEffect(() => {
    if (focus) document.querySelector(`[data-server="${CSS.escape(focus)}"]`)?.scrollIntoView({ block: 'center' })
  }, [focus, loading])

  const run = async (fn: () => Promise<unknown>) => {
    try { await fn(); setErrors(undefined) } catch (err) { setErrors(errorsOf(err)) }
  }

  const create = (e: Event) => {
    e.preventDefault()
    const form = e.currentTarget as HTMLFormElement
    const data = new FormData(form)
    const disks = data.getAll('drives').map(String)
    let virtio = 0
    let ide = 0
    const mounts = disks.map(uuid => {
      const d = free.find(x => x.uuid === uuid)
      return d?.media === 'cdrom'
        ? { device: 'ide' as const, dev_channel: `0:${ide++}`, drive: uuid }
        : { device: 'virtio' as const, dev_channel: `0:${virtio++}`, drive: uuid, boot_order: virtio }
    })
    void run(async () => {
      await ok(api.POST('/api/2.0/servers/', {
        body: {
          objects: [{
            name: String(data.get('name')),
            cpu: Number(data.get('cpu')),
            mem: Math.round(Number(data.get('mem')) * MiB),
            vnc_password: password(),
            drives: mounts,
            nics: [{ model: 'virtio', ip_v4_conf: { conf: 'dhcp' } }]
          }]
        }
      }))
      form.reset()
    })
  }

  const action = (uuid: string, act: 'clone' | 'start' | 'stop', body?: unknown) =>
    run(() => ok(api.POST('/api/2.0/servers/{uuid}/action/', { params: { path: { uuid }, query: { do: act } }, body: body as never })))

  const submitClone = (e: Event) => {
    e.preventDefault()
    if (!cloning) return
    const { uuid, name } = cloning
    void action(uuid, 'clone', name ? { name } : {}).then(() => setCloning(undefined))
  }

  const remove = (s: Server) => {
    if (!confirm(`Delete server ${s.name}? Its drives are detached and kept.`)) return
    void run(() => ok(api.DELETE('/api/2.0/servers/{uuid}/', { params: { path: { uuid: s.uuid! } } })))
  }

  return (
    <section>
      <div class='forms'>
        <form class='card' onSubmit={create} aria-label='Create server'>
          <h3>New server</h3>
          <label>Name <input name='name' required maxLength={100} /></label>
          <label>CPU (MHz) <input name='cpu' type='number' min='250' max='96000' required value='1000' /></label>
          <label>Memory (MiB) <input name='mem' type='number' min='256' max='532480' required value='1024' /></label>
          <label>Drives to attach
            <select name='drives' multiple size={Math.min(4, Math.max(2, free.length))}>
              {free.map(d => <option key={d.uuid} value={d.uuid}>{d.name} ({d.media}, {bytes(d.size)})</option>)}
            </select>
          </label>
          <button type='submit'>Create</button>
        </form>
      </div>
      <Errors errors={errors} onClose={() => setErrors(undefined)} />
      <table class='servers'>
        <thead><tr><th>Name</th><th>Status</th><th>CPU</th><th>Memory</th><th>Drives</th><th /></tr></thead>
        <tbody>
          {servers.map(s => {
            const status = s.status ?? ''
            return [
              <tr key={s.uuid} data-server={s.uuid} data-name={s.name} data-status={status} class={focus === s.uuid ? 'focus' : ''}>
                <Cell label='Name'>{s.name}</Cell>
                <Cell label='Status'><Badge value={status} /></Cell>
                <Cell label='CPU'>{s.cpu} MHz</Cell>
                <Cell label='Memory'>{bytes(s.mem)}</Cell>
                <Cell label='Drives'>{(s.drives ?? []).map(m => <a key={m.drive.uuid} href={`#drives/${m.drive.uuid}`} title={`${m.device} ${m.dev_channel}`}>{m.drive.uuid.slice(0, 8)} </a>)}</Cell>
                <Cell label='' class='actions'>
                  {status === 'stopped' ? <button type='button' onClick={() => { void action(s.uuid!, 'start') }}>Start</button> : null}
                  {status === 'running' ? <button type='button' onClick={() => { void action(s.uuid!, 'stop') }}>Stop</button> : null}
                  {status === 'stopped' || status === 'running' ? <button type='button' onClick={() => setCloning({ uuid: s.uuid!, name: `${s.name}-clone` })}>Clone</button> : null}
                  {status === 'stopped' ? <button type='button' class='danger' onClick={() => remove(s)}>Delete</button> : null}
                </Cell>
              </tr>,
              cloning && cloning.uuid === s.uuid
                ? (
                  <tr key={s.uuid + '-clone'} class='edit'>
                    <td colSpan={6}>
                      <form onSubmit={submitClone} class='inline'>
                        <label>Name of the clone
                          <input name='name' value={cloning.name} autoFocus onInput={e => setCloning({ uuid: s.uuid!, name: (e.target as HTMLInputElement).value })} />
                        </label>
                        <button type='submit'>Clone</button>
                        <button type='button' class='link' onClick={() => setCloning(undefined)}>cancel</button>
                      </form>
                    </td>
                  </tr>
                  )
                : null
            ]
          })}
        </tbody>
      </table>
      {!loading && servers.length === 0 ? <p class='muted empty'>No servers.</p> : null}
    </section>
  )
}
