// The "one frame per change" checks shared by the SSE and websocket tests: the same jobs, the same
// expectations, only the framing differs.
import type { Test } from 'tap'
import type { JobHandler } from '../../src/engine/types.ts'

/** The finished description the stepping job ends with. */
export const STEPPED_DONE = 'stopped it in 0.1 s'

/** A job that reports four progress steps 30 ms apart, then says what it did. */
export const steppingHandler: JobHandler = {
  async run (ctx) {
    for (let i = 1; i <= 4; i++) {
      ctx.progress({ bytesDone: i, bytesTotal: 4, description: `step ${i}` })
      await new Promise(resolve => setTimeout(resolve, 30))
    }
    ctx.progress({ description: STEPPED_DONE })
    return { ok: true }
  }
}

/**
 * The frames of one job (change kind and object, in the order received): each names its change,
 * the first says added and the later ones changed, the success arrives once, no frame repeats the
 * previous state, and the last is the finished job saying what was done.
 */
export function checkJobFrames (t: Test, frames: Array<{ change: string, object: { state: string, data: { description?: string } } }>): void {
  t.ok(frames.every(f => ['added', 'changed', 'removed'].includes(f.change)), 'every frame names its change')
  t.equal(frames[0].change, 'added', 'the first frame of a new job says added')
  t.ok(frames.slice(1).every(f => f.change === 'changed'), 'the later ones say changed')
  t.equal(frames.filter(f => f.object.state === 'success').length, 1, 'the success frame arrives once')
  const shown = frames.map(f => JSON.stringify(f.object))
  t.equal(new Set(shown).size, shown.length, 'no frame repeats the previous state')
  t.equal(frames.at(-1)!.object.data.description, STEPPED_DONE, 'the last frame is the finished job, saying what was done')
}
