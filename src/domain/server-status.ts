// Server status rules (spec §3.2), as pure functions: which power actions each status allows, the
// transient status an action shows while its job runs, and where it ends.

export const SERVER_STATUSES = ['stopped', 'starting', 'running', 'stopping', 'paused', 'unavailable'] as const
export type ServerStatus = typeof SERVER_STATUSES[number]

export const POWER_ACTIONS = ['start', 'stop', 'shutdown'] as const
export type PowerAction = typeof POWER_ACTIONS[number]

/** Statuses a job is moving the server through; they always end on their own. */
export const TRANSIENT_SERVER_STATUSES: readonly ServerStatus[] = ['starting', 'stopping']

export interface PowerTransition {
  action: PowerAction
  /** The status the server must be in. */
  from: ServerStatus
  /** Shown while the job runs. */
  during: ServerStatus
  /** Reached when the job succeeds (a shutdown the guest ignores goes back to `from`). */
  to: ServerStatus
  operation: 'server_start' | 'server_stop'
}

const TRANSITIONS: Record<PowerAction, PowerTransition> = {
  start: { action: 'start', from: 'stopped', during: 'starting', to: 'running', operation: 'server_start' },
  stop: { action: 'stop', from: 'running', during: 'stopping', to: 'stopped', operation: 'server_stop' },
  shutdown: { action: 'shutdown', from: 'running', during: 'stopping', to: 'stopped', operation: 'server_stop' }
}

export function isPowerAction (name: string): name is PowerAction {
  return (POWER_ACTIONS as readonly string[]).includes(name)
}

export type PowerVerdict =
  | { ok: true, transition: PowerTransition }
  /** busy: a job is moving the server already (503, retry); wrong_state: never from here (400). */
  | { ok: false, reason: 'busy' | 'wrong_state', message: string }

/** Whether `action` may start on a server in `status`, and the transition it makes. */
export function planPowerAction (action: PowerAction, status: string): PowerVerdict {
  const transition = TRANSITIONS[action]
  if (status === transition.from) return { ok: true, transition }
  if ((TRANSIENT_SERVER_STATUSES as readonly string[]).includes(status)) {
    return { ok: false, reason: 'busy', message: `Cannot ${action} the server while it is ${status}; try again when it is ${transition.from}` }
  }
  return { ok: false, reason: 'wrong_state', message: `Cannot ${action} a server that is ${status}; it must be ${transition.from}` }
}

/**
 * Whether a server in `status` takes every field of a PUT. A server that is not stopped uses its
 * drives and NICs, so only name, meta and tags apply (§3.4); the rest is silently ignored.
 */
export function acceptsFullUpdate (status: string): boolean {
  return status === 'stopped'
}

export type DeleteVerdict = { ok: true } | { ok: false, reason: 'busy' | 'wrong_state', message: string }

/** A server can be deleted only when stopped; starting/stopping are busy, the others wrong. */
export function canDeleteServer (status: string): DeleteVerdict {
  if (status === 'stopped') return { ok: true }
  if ((TRANSIENT_SERVER_STATUSES as readonly string[]).includes(status)) {
    return { ok: false, reason: 'busy', message: `The server is ${status}; try again when it is stopped` }
  }
  return { ok: false, reason: 'wrong_state', message: `Cannot delete a server that is ${status}; stop it first` }
}

/** `runtime.active_since`: ISO 8601 without fractions and with `+00:00` (§1.15). */
export function activeSinceTime (d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, '+00:00')
}
