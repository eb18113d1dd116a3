// Child processes of the storage (cp for local copies, rbd) must not outlive a killed service: a
// copy or flatten left running after a SIGKILL goes on writing while the process that takes the
// job over starts its own attempt. On Linux, util-linux `setpriv --pdeathsig` runs the command
// with a parent-death signal (the kernel sends it when the spawning thread, here the main thread,
// dies). Where setpriv is missing the command runs as it is.
import { existsSync } from 'node:fs'
import path from 'node:path'

const SETPRIV = process.platform === 'linux'
  ? (process.env.PATH ?? '').split(path.delimiter).map(d => path.join(d, 'setpriv')).find(f => existsSync(f))
  : undefined

/** `argv` run so that it gets `signal` when this process dies (where setpriv exists). */
export function dyingWithParent (argv: string[], signal: 'TERM' | 'KILL'): string[] {
  return SETPRIV === undefined ? argv : [SETPRIV, '--pdeathsig', signal, '--', ...argv]
}

/** setpriv's stderr when it could not start the command (missing, not executable): like a failed spawn. */
export const SETPRIV_EXEC_FAILED = /^setpriv: failed to execute/m
