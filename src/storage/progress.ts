// Copy progress for every backend: throttled, monotonic and clamped, with the caller's own
// exception carried through the copy machinery.
import type { CopyProgress } from './types.ts'

/** Carries an exception thrown by the caller's onProgress (or fenced guard) through the copy machinery. */
export class ProgressCallbackError extends Error {
  constructor (readonly inner: unknown, message = 'onProgress threw') {
    super(message)
  }
}

/** Throttled, monotonic, clamped progress reporting. */
export class Progress {
  private last = -1
  private lastAt = 0
  constructor (
    readonly total: number,
    private readonly cb: CopyProgress | undefined,
    private readonly intervalMs: number
  ) {}

  /** Reports `done` if the interval has passed (or `force`). May throw (the callback's exception). */
  report (done: number, force = false): void {
    if (this.cb === undefined) return
    const now = Date.now()
    if (!force && now - this.lastAt < this.intervalMs) return
    const value = Math.min(this.total, Math.max(this.last, done))
    this.last = value
    this.lastAt = now
    try {
      this.cb(value, this.total)
    } catch (err) {
      throw new ProgressCallbackError(err)
    }
  }
}
