// Keeps an embedded PostgreSQL running for a test run (started by test/setup/test-db.ts when no
// database URL is given) and stops it on SIGTERM. Arguments: data folder, state file.
import fs from 'node:fs'
import net from 'node:net'
import { once } from 'node:events'
import path from 'node:path'
import { startEmbeddedPostgres } from '../../src/db/embedded.ts'

const [dir, stateFile] = process.argv.slice(2)
// a free port unless one is given: a daemon of another checkout may hold any fixed one
async function freePort (): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  await new Promise(resolve => server.close(resolve))
  return port
}
const port = process.env.TEST_EMBEDDED_PG_PORT ? Number(process.env.TEST_EMBEDDED_PG_PORT) : await freePort()
fs.mkdirSync(path.dirname(dir), { recursive: true })
// PostgreSQL logs to <dir>.log
const db = await startEmbeddedPostgres({ dir, port })
const adminUrl = db.url.replace(/\/clonejobs$/, '/postgres')
// written whole, then renamed into place: the test run polls for the file and reads it as soon as it
// exists (written in place, it was once read empty: 'Unexpected end of JSON input', CI 2026-12-06)
fs.writeFileSync(`${stateFile}.${process.pid}`, JSON.stringify({ url: adminUrl, pid: process.pid }))
fs.renameSync(`${stateFile}.${process.pid}`, stateFile)

let stopping = false
async function stop (): Promise<void> {
  if (stopping) return
  stopping = true
  await db.stop()
  fs.rmSync(stateFile, { force: true })
  process.exit(0)
}
process.on('SIGTERM', () => { void stop() })
process.on('SIGINT', () => { void stop() })
setInterval(() => {}, 1 << 30)
