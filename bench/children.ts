/**
 * A bench's child processes (the service, the bare server, load generators, CPU burners) end with
 * the bench: a bench stopped by Ctrl-C, a timeout or a kill would otherwise leave them running,
 * serving on their ports or burning a CPU for good. They get a parent-death signal (setpriv, as
 * the storage's children do: src/storage/parent-death.ts).
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { dyingWithParent } from '../src/storage/parent-death.ts'

/** `spawn(command, args, options)`, the child sent `signal` when the bench dies (TERM: a server stops cleanly). */
export function spawnTied (command: string, args: string[], options: SpawnOptions, signal: 'TERM' | 'KILL' = 'TERM'): ChildProcess {
  const [cmd, ...argv] = dyingWithParent([command, ...args], signal)
  return spawn(cmd, argv, options)
}
