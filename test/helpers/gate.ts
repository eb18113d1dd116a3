// Calls held at a gate: each reports that it was reached, then waits for `release()` before it goes
// on. Lets a test act while a copy waits at its fence or a storage call is under way.
import type { CopyOptions, DriveStorage } from '../../src/storage/index.ts'

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

/**
 * `storage` (a real one) whose copies each run `hold(n)` (n: the copy's number, from 1) inside
 * their fenced step, with the job row locked, right before the rename (e.g. holdThread: a process
 * stopped or swapped out there); `renamed` lists the copies whose rename then happened.
 */
export function copiesHeldInFence (storage: DriveStorage, hold: (n: number) => void): { proxy: DriveStorage, renamed: number[] } {
  let copies = 0
  const renamed: number[] = []
  const proxy = new Proxy(storage, {
    get (target, p) {
      const v = Reflect.get(target, p, target) as unknown
      if (p !== 'copy') return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
      return (from: string, to: string, o: CopyOptions = {}) => target.copy(from, to, {
        ...o,
        fenced: async (commit) => o.fenced!(async () => {
          const n = ++copies
          hold(n)
          await commit()
          renamed.push(n)
        })
      })
    }
  })
  return { proxy, renamed }
}
