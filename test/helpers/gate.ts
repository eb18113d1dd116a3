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
