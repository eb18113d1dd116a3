// Process entry: settings, the embedded PostgreSQL when no DATABASE_URL is given, migrations,
// listen, and the stop on SIGTERM/SIGINT: stop accepting, end event streams, hand running jobs
// back, let in-flight requests finish within STOP_GRACE_MS, stop the embedded PostgreSQL last.
import path from 'node:path'
import v8 from 'node:v8'
import { loadConfig, type Config } from './config.ts'
import { EmbeddedSetupError, startEmbeddedPostgres, type EmbeddedDatabase } from './db/embedded.ts'
import { runMigrations } from './db/migrate.ts'
import { bootstrapAccount } from './features/accounts/service.ts'

// Streaming images churns through buffers (external memory) while the JS heap stays the same size.
// V8 then set the next mark-compact's limit just above the live heap, and major GCs ran back to
// back (6-15 per 256 MiB transfer in bench:transfer, each freeing nothing; the service's CPU in a
// transfer 2-6x the bare pipe's). A fixed growing factor of 2 lets the heap double before the next
// one (0-1 per transfer). Said in the "serving" log line.
const V8_FLAGS = '--heap-growing-percent=100'
v8.setFlagsFromString(V8_FLAGS)

// one clear line, no stack trace, for what the person starting the service must fix
function fail (message: string): never {
  process.stderr.write(message + '\n')
  process.exit(1)
}

// Module-level state here is the process's own (this file is run, never imported by an app):
// start-up timings, the settings, the embedded database and the stop sequence.
const phases: Record<string, unknown> = { node: Math.round(process.uptime() * 1000) }
let mark = Date.now()
const phase = (name: string) => { const now = Date.now(); phases[name] = now - mark; mark = now }

let config: Config
try {
  config = loadConfig()
} catch (err) {
  fail(`clonejobs: ${(err as Error).message}`)
}

let embedded: EmbeddedDatabase | undefined
let databaseUrl = config.databaseUrl
// events of the embedded PostgreSQL's supervisor before the app's logger exists go to stderr
let dbEvent = (level: string, msg: string, fields?: Record<string, unknown>) => { process.stderr.write(JSON.stringify({ level, msg, ...fields }) + '\n') }
if (!databaseUrl) {
  try {
    embedded = await startEmbeddedPostgres({
      dir: path.join(config.dataDir, 'pg'),
      port: config.embeddedPgPort,
      onEvent: (level, msg, fields) => dbEvent(level, msg, fields)
    })
  } catch (err) {
    if (err instanceof EmbeddedSetupError) fail(err.message)
    fail(`clonejobs: the embedded PostgreSQL did not start: ${(err as Error).message}`)
  }
  databaseUrl = embedded.url
  phases.embedded = embedded.timings
  phase('database')
}

// migrations run while the app's modules load
const [applied, { buildApp }] = await Promise.all([
  runMigrations(databaseUrl).then(r => { phases.migrate = Date.now() - mark; return r }),
  import('./app.ts').then(m => { phases.import = Date.now() - mark; return m })
])
mark = Date.now()

const app = await buildApp({ config, databaseUrl, role: config.role })
phase('app')
dbEvent = (level, msg, fields) => app.log[level as 'info' | 'warn' | 'error']({ component: 'embedded-postgres', ...fields }, msg)
if (applied.length > 0) app.log.info({ migrations: applied }, 'database migrated')
app.log.info({ database: embedded ? `embedded PostgreSQL in ${path.join(config.dataDir, 'pg')} on port ${embedded.port}` : 'DATABASE_URL', dataDir: config.dataDir }, 'database ready')

if (config.bootstrapAccount) {
  const created = await bootstrapAccount(app.prisma)
  if (created) {
    // printed once, on the first start against an empty database, as text for the person at the
    // terminal: never as a log record, which log collectors keep
    process.stdout.write([
      '',
      '  No account existed, so one was created. Save this password: it is not shown again.',
      `    email:    ${created.email}`,
      `    password: ${created.password}`,
      `  Try: curl -u '${created.email}:${created.password}' http://${config.host}:${config.port}/api/2.0/jobs/`,
      ''
    ].join('\n') + '\n')
  }
  phase('bootstrap')
}

let stopping: Promise<void> | undefined
let firstSignalAt = 0

async function stop (reason: Record<string, unknown>): Promise<void> {
  const began = Date.now()
  app.log.info({ ...reason, graceMs: config.stopGraceMs }, 'stopping')
  // in-flight requests get the grace; then their connections are cut
  const grace = setTimeout(() => {
    app.log.warn('grace period over: closing the connections still open')
    app.server.closeAllConnections()
  }, config.stopGraceMs)
  // a close that hangs anyway must not outlive the grace by much
  const deadline = setTimeout(() => {
    app.log.error('stop did not finish in time; exiting')
    void embedded?.stop().finally(() => process.exit(1))
  }, config.stopGraceMs + 2000)
  try {
    await app.close()
  } catch (err) {
    app.log.error({ err }, 'closing the app failed')
    process.exitCode = 1
  }
  clearTimeout(grace)
  const closed = Date.now()
  await embedded?.stop()
  clearTimeout(deadline)
  app.log.info({ ms: Date.now() - began, appMs: closed - began, databaseMs: Date.now() - closed }, 'stopped')
  // a handle some library left open must not keep a stopped service alive
  setTimeout(() => process.exit(), 1000).unref()
}

function onSignal (signal: NodeJS.Signals): void {
  if (!stopping) {
    firstSignalAt = Date.now()
    stopping = stop({ signal })
    return
  }
  // `npm start` in a terminal delivers a Ctrl-C twice (the terminal's and npm's): only a later one forces
  if (Date.now() - firstSignalAt < 1000) return
  app.log.warn({ signal }, 'second signal: exiting now')
  void embedded?.stop().finally(() => process.exit(1))
}
process.on('SIGTERM', onSignal)
process.on('SIGINT', onSignal)
const onFatal = (err: unknown) => {
  app.log.fatal({ err }, 'unexpected error; stopping')
  process.exitCode = 1
  stopping ??= stop({ error: true })
}
process.on('uncaughtException', onFatal)
process.on('unhandledRejection', onFatal)

await app.listen({ host: config.host, port: config.port })
phase('listen')
app.log.info({ ms: Math.round(process.uptime() * 1000), phases, v8Flags: V8_FLAGS }, 'clonejobs is serving')
