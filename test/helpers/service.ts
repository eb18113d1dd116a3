// The real service as a child process, for tests of start-up, stop and roles: src/server.ts through
// tsx by default, or any command line of bin/clonejobs.js (which runs dist/ when it is up to date).
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs'
import path from 'node:path'
import { ROOT } from '../setup/test-db.ts'
import { freePort, freePorts } from './net.ts'

export interface Service {
  child: ChildProcess
  stdout: () => string
  output: () => string
  waitFor: (re: RegExp, ms?: number) => Promise<RegExpExecArray>
  /** Resolves with [code, signal] once the process has exited. */
  exited: Promise<[number | null, NodeJS.Signals | null]>
}

/** An environment for the embedded default: its own DATA_DIR and ports, no DATABASE_URL. */
export async function embeddedEnv (dataDir: string, extra: NodeJS.ProcessEnv = {}): Promise<NodeJS.ProcessEnv> {
  const [port, pgPort] = await freePorts(2)
  const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir, PORT: String(port), EMBEDDED_PG_PORT: String(pgPort), LOG_LEVEL: 'info', ...extra }
  delete env.DATABASE_URL
  delete env.TEST_DATABASE_URL
  return env
}

/** The server entry through tsx, as `npm run dev` runs it. */
export const SERVER_ENTRY = ['--import', 'tsx', path.join(ROOT, 'src/server.ts')]
/** `clonejobs serve --role <role>` through bin/clonejobs.js, as an operator runs it. */
export const serveCommand = (role: string) => [path.join(ROOT, 'bin/clonejobs.js'), 'serve', '--role', role]

export function startService (env: NodeJS.ProcessEnv, args: string[] = SERVER_ENTRY): Service {
  const child = spawn(process.execPath, args, {
    cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let output = ''
  child.stdout!.on('data', d => { stdout += d; output += d })
  child.stderr!.on('data', d => { output += d })
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
  const waitFor = async (re: RegExp, ms = 120_000) => {
    const deadline = Date.now() + ms
    while (Date.now() < deadline) {
      const m = re.exec(output)
      if (m) return m
      if (child.exitCode !== null) throw new Error('service exited early:\n' + output)
      await new Promise(resolve => setTimeout(resolve, 50))
    }
    throw new Error(`timed out waiting for ${re}:\n${output}`)
  }
  return { child, stdout: () => stdout, output: () => output, waitFor, exited }
}

/**
 * A service on a free port (PORT), once it says `ready`. The port is free when chosen and bound
 * later by the child, so a test running beside it can take it in between (EADDRINUSE, seen in CI):
 * then it starts again on another. Stopped (SIGTERM) at teardown unless it already ended.
 */
export async function serveOnFreePort (t: { teardown: (fn: () => Promise<void>) => void }, env: (port: number) => NodeJS.ProcessEnv, args?: string[], ready = /clonejobs is serving/): Promise<{ svc: Service, port: number }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort()
    const svc = startService(env(port), args)
    t.teardown(async () => {
      if (svc.child.exitCode !== null || svc.child.signalCode !== null) return
      svc.child.kill('SIGTERM')
      await svc.exited
    })
    try {
      await svc.waitFor(ready)
      return { svc, port }
    } catch (err) {
      if (attempt >= 3 || !/EADDRINUSE/.test(svc.output())) throw err
    }
  }
}

/** Processes whose command line mentions `text` (e.g. a postmaster's data folder). */
export function processesMentioning (text: string): number[] {
  const found: number[] = []
  for (const pid of fs.readdirSync('/proc').filter(p => /^\d+$/.test(p))) {
    try {
      if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(text)) found.push(Number(pid))
    } catch {}
  }
  return found
}

/**
 * A test fixture script (`node --import tsx <fixture> ...args`) that prints `ready` once it serves;
 * resolves then, rejects if it exits first. Killed at teardown unless it already ended.
 */
export function spawnFixture (t: { teardown: (fn: () => void) => void }, fixture: string, args: string[], what = 'fixture'): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  return new Promise((resolve, reject) => {
    let out = ''
    child.stdout!.on('data', (chunk) => {
      out += String(chunk)
      if (out.includes('ready\n')) resolve(child)
      if (out.length > 100_000) out = out.slice(-1000)
    })
    child.on('exit', (code) => reject(new Error(`${what} exited with ${code}`)))
  })
}
