// Calls held at a gate: each reports that it was reached, then waits for `release()` before it goes
// on. Lets a test act while a copy waits at its fence or a storage call is under way.

interface Gate {
  /** resolves when the first call reaches the gate */
  reached: Promise<void>
  release: () => void
  /** calls that have reached the gate */
  calls: () => number
  /** what a held call runs first */
  pass: () => Promise<void>
}

function gate (): Gate {
  let release!: () => void
  const open = new Promise<void>(resolve => { release = resolve })
  let reach!: () => void
  const reached = new Promise<void>(resolve => { reach = resolve })
  let calls = 0
  return { reached, release, calls: () => calls, pass: async () => { calls++; reach(); await open } }
}

/** A copy's fence (CopyOptions.fenced) held open: the copy waits there before it commits. */
export function heldFence (): { fenced: (commit: () => Promise<void>) => Promise<void>, reached: Promise<void>, release: () => void } {
  const g = gate()
  return { fenced: async (commit) => { await g.pass(); await commit() }, reached: g.reached, release: g.release }
}

/**
 * `target` (a real storage) whose method `name` waits at a gate, then runs as it is. Every other
 * member is `target`'s own.
 */
export function heldMethod<T extends object> (target: T, name: keyof T & string): { proxy: T, reached: Promise<void>, release: () => void, calls: () => number } {
  const g = gate()
  const proxy = new Proxy(target, {
    get (t, p) {
      const v = Reflect.get(t, p, t) as unknown
      if (typeof v !== 'function') return v
      const bound = (v as (...a: unknown[]) => unknown).bind(t)
      if (p !== name) return bound
      return async (...args: unknown[]) => { await g.pass(); return bound(...args) }
    }
  })
  return { proxy, reached: g.reached, release: g.release, calls: g.calls }
}
