// Drives: the list with live status, create, clone, resize, delete, resumable.js upload (and
// resuming it into a drive still uploading) and one-time download links. Buttons show only for statuses the API accepts them in.
import { useEffect, useRef, useState } from 'preact/hooks'
import { api, ok, type ApiErrorItem, type Drive } from './api.ts'
import type { Frame } from './events.ts'
import { GiB, bytes } from './format.ts'
import { Badge, Cell, Errors, errorsOf, type Hub } from './ui.tsx'
import { sendChunks, startUpload, type UploadProgress } from './upload.ts'

const RESTING = new Set(['unmounted', 'mounted'])
const READABLE = new Set(['unmounted', 'mounted', 'cloning_src'])

type Editing = { uuid: string, kind: 'resize' | 'clone', value: string } | undefined

export function DrivesView ({ hub, focus }: { hub: Hub, focus?: string }) {
  const [drives, setDrives] = useState<Drive[]>([])
  const [errors, setErrors] = useState<ApiErrorItem[]>()
  const [loading, setLoading] = useState(true)
  const [editing, setEditing] = useState<Editing>()
  const [upload, setUpload] = useState<UploadProgress & { name: string }>()
  const [download, setDownload] = useState<{ uuid: string, url: string }>()
  const [reloads, setReloads] = useState(0)
  const fileInput = useRef<HTMLInputElement>(null)

  useEffect(() => {
    let stale = false
    ok(api.GET('/api/2.0/drives/detail/', { params: { query: { limit: 0 } } })).then(page => {
      if (!stale) { setDrives(page.objects); setLoading(false) }
    }, err => { if (!stale) { setErrors(errorsOf(err)); setLoading(false) } })
    return () => { stale = true }
  }, [reloads])

  useEffect(() => hub.onState(s => { if (s === 'live') setReloads(n => n + 1) }), [hub])
  useEffect(() => hub.on((frame: Frame) => {
    if (frame.resource_type !== 'drives') return
    const uuid = frame.resource_uri.split('/').filter(Boolean).at(-1)
    setDrives(list => {
      const at = list.findIndex(d => d.uuid === uuid)
      // no object: the drive is gone
      if (frame.change === 'removed' || !frame.object) return at < 0 ? list : list.filter(d => d.uuid !== uuid)
      const drive = frame.object as Drive
      if (at < 0) return [drive, ...list]
      const next = [...list]
      next[at] = drive
      return next
    })
  }), [hub])

  useEffect(() => {
    if (focus) document.querySelector(`[data-drive="${CSS.escape(focus)}"]`)?.scrollIntoView({ block: 'center' })
  }, [focus, loading])

  const run = async (fn: () => Promise<unknown>) => {
    try {
      await fn()
      setErrors(undefined)
      return true
    } catch (err) {
      setErrors(errorsOf(err))
      return false
    }
  }

  const create = (e: Event) => {
    e.preventDefault()
    const form = e.currentTarget as HTMLFormElement
    const data = new FormData(form)
    void run(async () => {
      await ok(api.POST('/api/2.0/drives/', {
        body: { objects: [{ name: String(data.get('name')), size: Math.round(Number(data.get('size')) * GiB), media: data.get('media') as 'disk' | 'cdrom' }] }
      }))
      form.reset()
    })
  }

  const action = (uuid: string, act: 'clone' | 'resize', body?: unknown) =>
    ok(api.POST('/api/2.0/drives/{uuid}/action/', { params: { path: { uuid }, query: { do: act } }, body: body as never }))

  const submitEdit = (e: Event) => {
    e.preventDefault()
    if (!editing) return
    const { uuid, kind, value } = editing
    void run(async () => {
      if (kind === 'clone') await action(uuid, 'clone', value ? { name: value } : {})
      else await action(uuid, 'resize', { size: Math.round(Number(value) * GiB) })
      setEditing(undefined)
    })
  }

  const remove = (drive: Drive) => {
    if (!confirm(`Delete drive ${drive.name}? Its data is lost.`)) return
    void run(() => ok(api.DELETE('/api/2.0/drives/{uuid}/', { params: { path: { uuid: drive.uuid! } } })))
  }

  const getLink = (drive: Drive) => run(async () => {
    const res = await ok(api.POST('/api/2.0/drives/{uuid}/action/?do=download', { params: { path: { uuid: drive.uuid! } } }))
    setDownload({ uuid: drive.uuid!, url: res.url })
  })

  const sendFile = (e: Event) => {
    e.preventDefault()
    const form = e.currentTarget as HTMLFormElement
    const file = fileInput.current?.files?.[0]
    if (!file) { setErrors([{ error_type: 'validation', error_message: 'Choose a file to upload', error_point: 'file' }]); return }
    const name = String(new FormData(form).get('name') || file.name)
    const media = new FormData(form).get('media') as 'disk' | 'cdrom'
    void run(async () => {
      setUpload({ name, sent: 0, total: file.size })
      try {
        const drive = await startUpload(file, name, media)
        await sendChunks(drive.uuid!, file, p => setUpload({ name, ...p }))
        form.reset()
      } finally {
        setUpload(undefined)
      }
    })
  }

  // the same file again into a drive whose upload stopped (page reloaded, network lost): only the
  // chunks the service does not hold are sent
  const resume = (drive: Drive, input: HTMLInputElement) => {
    const file = input.files?.[0]
    if (!file) return
    const name = drive.name ?? file.name
    void run(async () => {
      setUpload({ name, sent: 0, total: file.size })
      try {
        await sendChunks(drive.uuid!, file, p => setUpload({ name, ...p }), { resume: true })
      } finally {
        setUpload(undefined)
        input.value = ''
      }
    })
  }

  return (
    <section>
      <div class='forms'>
        <form class='card' onSubmit={create} aria-label='Create drive'>
          <h3>New drive</h3>
          <label>Name <input name='name' required maxLength={100} /></label>
          <label>Size (GiB) <input name='size' type='number' min='0.001' step='any' required value='1' /></label>
          <label>Media <select name='media'><option value='disk'>disk</option><option value='cdrom'>cdrom</option></select></label>
          <button type='submit'>Create</button>
        </form>
        <form class='card' onSubmit={sendFile} aria-label='Upload drive'>
          <h3>Upload an image</h3>
          <label>File <input ref={fileInput} name='file' type='file' required /></label>
          <label>Name <input name='name' placeholder='the file name' maxLength={100} /></label>
          <label>Media <select name='media'><option value='disk'>disk</option><option value='cdrom'>cdrom</option></select></label>
          <button type='submit' disabled={!!upload}>Upload</button>
          {upload
            ? <div class='upload-progress'><progress max={upload.total || 1} value={upload.sent} /> {upload.name}: {bytes(upload.sent)} / {bytes(upload.total)}</div>
            : null}
        </form>
      </div>
      <Errors errors={errors} onClose={() => setErrors(undefined)} />
      {download
        ? <p class='notice'>One-time link for drive {download.uuid.slice(0, 8)} (works once, start it within a minute): <a class='download-link' href={download.url} download>download</a> <button type='button' class='link' onClick={() => setDownload(undefined)}>×</button></p>
        : null}
      <table class='drives'>
        <thead><tr><th>Name</th><th>Status</th><th>Media</th><th>Size</th><th title='Bytes the image takes on storage'>Allocated</th><th>Mounted on</th><th /></tr></thead>
        <tbody>
          {drives.map(d => {
            const status = d.status ?? ''
            const mine = editing?.uuid === d.uuid ? editing : undefined
            return [
              <tr key={d.uuid} data-drive={d.uuid} data-name={d.name} data-status={status} class={focus === d.uuid ? 'focus' : ''}>
                <Cell label='Name'>{d.name}</Cell>
                <Cell label='Status'><Badge value={status} /></Cell>
                <Cell label='Media'>{d.media}</Cell>
                <Cell label='Size'>{bytes(d.size)}</Cell>
                <Cell label='Allocated' class='allocated'>{bytes(d.runtime?.allocated_size)}</Cell>
                <Cell label='Mounted on'>{(d.mounted_on ?? []).map(m => <a key={m.uuid} href={`#servers/${m.uuid}`}>{m.uuid.slice(0, 8)} </a>)}</Cell>
                <Cell label='' class='actions'>
                  {status === 'uploading' && !upload
                    ? <label class='resume'>Resume upload <input type='file' aria-label={`Resume the upload of ${d.name}`} onChange={e => resume(d, e.currentTarget)} /></label>
                    : null}
                  {READABLE.has(status) ? <button type='button' onClick={() => setEditing({ uuid: d.uuid!, kind: 'clone', value: `${d.name}-clone` })}>Clone</button> : null}
                  {RESTING.has(status) && !(d.mounted_on?.length) ? <button type='button' onClick={() => setEditing({ uuid: d.uuid!, kind: 'resize', value: String((d.size ?? 0) / GiB) })}>Resize</button> : null}
                  {READABLE.has(status) && d.runtime?.is_downloadable !== false ? <button type='button' onClick={() => { void getLink(d) }}>Download</button> : null}
                  {(RESTING.has(status) || status === 'unavailable') && !(d.mounted_on?.length) ? <button type='button' class='danger' onClick={() => remove(d)}>Delete</button> : null}
                </Cell>
              </tr>,
              mine
                ? (
                  <tr key={d.uuid + '-edit'} class='edit'>
                    <td colSpan={7}>
                      <form onSubmit={submitEdit} class='inline'>
                        <label>{mine.kind === 'clone' ? 'Name of the clone' : 'New size (GiB, not smaller)'}
                          {mine.kind === 'resize'
                            ? <input name='value' type='number' step='any' min={String((d.size ?? 0) / GiB)} required autoFocus value={mine.value} onInput={e => setEditing({ ...mine, value: (e.target as HTMLInputElement).value })} />
                            : <input name='value' type='text' maxLength={100} autoFocus value={mine.value} onInput={e => setEditing({ ...mine, value: (e.target as HTMLInputElement).value })} />}
                        </label>
                        <button type='submit'>{mine.kind === 'clone' ? 'Clone' : 'Resize'}</button>
                        <button type='button' class='link' onClick={() => setEditing(undefined)}>cancel</button>
                      </form>
                    </td>
                  </tr>
                  )
                : null
            ]
          })}
        </tbody>
      </table>
      {!loading && drives.length === 0 ? <p class='muted empty'>No drives.</p> : null}
    </section>
  )
}
