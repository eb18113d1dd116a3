/**
 * Added load for a bench's `--load N`: N child processes that burn a CPU each for the whole run,
 * so a loaded figure can be made again (the service and its anchor run under the same load).
 */
import type { ChildProcess } from 'node:child_process'
import { spawnTied } from './children.ts'

/** Starts `n` CPU burners; the returned function ends them. */
export function startBurners (n: number): () => void {
  const burning: ChildProcess[] = []
  for (let i = 0; i < n; i++) {
    burning.push(spawnTied(process.execPath, ['-e', 'let x = 1; for (;;) x = (Math.imul(x, 1103515245) + 12345) | 0'], { stdio: 'ignore' }, 'KILL'))
  }
  return () => { for (const b of burning) b.kill('SIGKILL') }
}

/** What a bench header says about the added load. */
export function describeLoad (n: number): string {
  return `added load: ${n === 0 ? 'none' : `${n} CPU-burning process${n > 1 ? 'es' : ''} for the whole run (anchor and service alike)`}`
}
