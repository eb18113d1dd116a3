// A copy's fence held open: `fenced` (a storage copy's CopyOptions.fenced) reports that the copy
// reached it, then waits for `release()` before it commits. Lets a test act while a finished copy
// waits to be put in place (another attempt starting meanwhile, say).

export interface HeldFence {
  fenced: (commit: () => Promise<void>) => Promise<void>
  /** resolves when the copy reaches its fence */
  reached: Promise<void>
  release: () => void
}

export function heldFence (): HeldFence {
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  let reach!: () => void
  const reached = new Promise<void>(resolve => { reach = resolve })
  return { fenced: async (commit) => { reach(); await gate; await commit() }, reached, release }
}

/**
 * `target` (a real storage) whose method `name` waits at a gate: it reports that it was reached,
 * then waits for `release()` before it runs as it is. Every other member is `target`'s own.
 */
export function heldMethod<T extends object> (target: T, name: keyof T & string): { proxy: T, reached: Promise<void>, release: () => void } {
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  let reach!: () => void
  const reached = new Promise<void>(resolve => { reach = resolve })
  const proxy = new Proxy(target, {
    get (t, p) {
      const v = Reflect.get(t, p, t) as unknown
      if (typeof v !== 'function') return v
      const bound = (v as (...a: unknown[]) => unknown).bind(t)
      if (p !== name) return bound
      return async (...args: unknown[]) => { reach(); await gate; return bound(...args) }
    }
  })
  return { proxy, reached, release }
}
