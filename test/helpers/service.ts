// The real service as a child process (src/server.ts through tsx), for tests of start-up and stop.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { ROOT } from '../setup/test-db.ts'

export async function freePort (): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port
  await new Promise(resolve => server.close(resolve))
  return port
}

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
  const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir, PORT: String(await freePort()), EMBEDDED_PG_PORT: String(await freePort()), LOG_LEVEL: 'info', ...extra }
  delete env.DATABASE_URL
  delete env.TEST_DATABASE_URL
  return env
}

export function startService (env: NodeJS.ProcessEnv): Service {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/server.ts')], {
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
