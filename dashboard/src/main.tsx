// The dashboard shell: sign-in, navigation (#jobs, #drives, #servers) and the one live stream.
import { render } from 'preact'
import { useEffect, useMemo, useState } from 'preact/hooks'
import { api, clearCredentials, ok, setCredentials, type ApiErrorItem } from './api.ts'
import { DrivesView } from './drives.tsx'
import { openEvents, type StreamState } from './events.ts'
import { JobsView } from './jobs.tsx'
import { ServersView } from './servers.tsx'
import { Errors, Hub, errorsOf } from './ui.tsx'
import './style.css'

function SignIn ({ onSignedIn }: { onSignedIn: (email: string) => void }) {
  const [errors, setErrors] = useState<ApiErrorItem[]>()
  const [busy, setBusy] = useState(false)
  const submit = async (e: Event) => {
    e.preventDefault()
    const data = new FormData(e.currentTarget as HTMLFormElement)
    const email = String(data.get('email'))
    setCredentials(email, String(data.get('password')))
    setBusy(true)
    try {
      const profile = await ok(api.GET('/api/2.0/profile/'))
      onSignedIn(profile.email)
    } catch (err) {
      clearCredentials()
      setErrors(errorsOf(err))
    } finally {
      setBusy(false)
    }
  }
  return (
    <main class='signin'>
      <form class='card' onSubmit={e => { void submit(e) }} aria-label='Sign in'>
        <h1>clonejobs</h1>
        <label>Email <input name='email' type='email' autoComplete='username' required autoFocus /></label>
        <label>Password <input name='password' type='password' autoComplete='current-password' required /></label>
        <Errors errors={errors} />
        <button type='submit' disabled={busy}>Sign in</button>
      </form>
    </main>
  )
}

function useHash (): string {
  const [hash, setHash] = useState(location.hash.slice(1))
  useEffect(() => {
    const on = () => setHash(location.hash.slice(1))
    addEventListener('hashchange', on)
    return () => removeEventListener('hashchange', on)
  }, [])
  return hash
}

function Dashboard ({ email, onSignOut }: { email: string, onSignOut: () => void }) {
  const hub = useMemo(() => new Hub(), [])
  const [stream, setStream] = useState<StreamState>('connecting')
  // the jobs opened in the jobs table stay open across tab switches
  const [expandedJobs, setExpandedJobs] = useState<Set<string>>(() => new Set())
  useEffect(() => openEvents(f => hub.emit(f), s => { hub.setState(s); setStream(s) }), [hub])
  const [view, focus] = useHash().split('/')
  const tab = view === 'drives' || view === 'servers' ? view : 'jobs'
  return (
    <>
      <header>
        <strong class='brand'>clonejobs</strong>
        <nav>
          {(['jobs', 'drives', 'servers'] as const).map(t => (
            <a key={t} href={`#${t}`} class={tab === t ? 'active' : ''} aria-current={tab === t ? 'page' : undefined}>{t[0].toUpperCase() + t.slice(1)}</a>
          ))}
        </nav>
        <span class={`stream s-${stream}`} title='live updates' data-stream={stream}>{stream === 'live' ? '● live' : stream === 'connecting' ? '○ connecting' : '○ reconnecting'}</span>
        <span class='who'>{email} <button type='button' class='link' onClick={onSignOut}>Sign out</button></span>
      </header>
      <main>
        {tab === 'jobs' ? <JobsView hub={hub} expanded={expandedJobs} setExpanded={setExpandedJobs} /> : tab === 'drives' ? <DrivesView hub={hub} focus={focus} /> : <ServersView hub={hub} focus={focus} />}
      </main>
    </>
  )
}

function App () {
  const [email, setEmail] = useState<string>()
  if (!email) return <SignIn onSignedIn={setEmail} />
  return <Dashboard email={email} onSignOut={() => { clearCredentials(); setEmail(undefined) }} />
}

render(<App />, document.getElementById('app')!)
