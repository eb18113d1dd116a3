// Small shared pieces: the error list, state badges, and a hub that fans stream frames out to views.
import type { ComponentChildren } from 'preact'
import { ApiError, type ApiErrorItem } from './api.ts'
import type { Frame, StreamState } from './events.ts'

export function errorsOf (err: unknown): ApiErrorItem[] {
  if (err instanceof ApiError) return err.errors
  return [{ error_type: 'client', error_message: (err as Error)?.message ?? String(err), error_point: null }]
}

export function Errors ({ errors, onClose }: { errors: ApiErrorItem[] | undefined, onClose?: () => void }) {
  if (!errors || errors.length === 0) return null
  return (
    <div class='errors' role='alert'>
      <ul>
        {errors.map((e, i) => (
          <li key={i}><strong>{e.error_type}</strong>: {e.error_message}{e.error_point ? <span class='point'> ({e.error_point})</span> : null}</li>
        ))}
      </ul>
      {onClose ? <button type='button' class='link' onClick={onClose} aria-label='Dismiss'>×</button> : null}
    </div>
  )
}

export function Badge ({ value }: { value: string | undefined }) {
  return <span class={`badge s-${value ?? 'unknown'}`} data-state={value}>{value ?? '?'}</span>
}

export function Cell ({ label, children, class: cls }: { label: string, children?: ComponentChildren, class?: string }) {
  return <td data-label={label} class={cls}>{children}</td>
}

/** Frames of the one live stream, handed to whichever views listen. */
export class Hub {
  private listeners = new Set<(f: Frame) => void>()
  private stateListeners = new Set<(s: StreamState) => void>()
  state: StreamState = 'connecting'
  on (fn: (f: Frame) => void): () => void { this.listeners.add(fn); return () => { this.listeners.delete(fn) } }
  onState (fn: (s: StreamState) => void): () => void { this.stateListeners.add(fn); return () => { this.stateListeners.delete(fn) } }
  emit (f: Frame): void { for (const fn of this.listeners) fn(f) }
  setState (s: StreamState): void { this.state = s; for (const fn of this.stateListeners) fn(s) }
}
