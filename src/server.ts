// Process entry: settings, the embedded PostgreSQL when no DATABASE_URL is given, migrations,
// listen, and a graceful close on SIGTERM/SIGINT.
import closeWithGrace from 'close-with-grace'
import path from 'node:path'
import { loadConfig } from './config.ts'
import { startEmbeddedPostgres, type EmbeddedDatabase } from './db/embedded.ts'
import { runMigrations } from './db/migrate.ts'
import { bootstrapAccount } from './features/accounts/service.ts'

const config = loadConfig()
const started = Date.now()
let embedded: EmbeddedDatabase | undefined
let databaseUrl = config.databaseUrl
if (!databaseUrl) {
  embedded = await startEmbeddedPostgres({ dir: path.join(config.dataDir, 'pg'), port: config.embeddedPgPort })
  databaseUrl = embedded.url
}
// migrations run in a child process while this one loads the app's modules
const [applied, { buildApp }] = await Promise.all([runMigrations(databaseUrl), import('./app.ts')])

const app = await buildApp({ config, databaseUrl, role: config.role })
if (applied.length > 0) app.log.info({ migrations: applied }, 'database migrated')
app.log.info({ database: embedded ? `embedded PostgreSQL in ${path.join(config.dataDir, 'pg')}` : 'DATABASE_URL', dataDir: config.dataDir }, 'database ready')

if (config.bootstrapAccount) {
  const created = await bootstrapAccount(app.prisma)
  if (created) {
    // printed once, on the first start against an empty database
    process.stdout.write([
      '',
      '  No account existed, so one was created. Save this password: it is not shown again.',
      `    email:    ${created.email}`,
      `    password: ${created.password}`,
      `  Try: curl -u '${created.email}:${created.password}' http://${config.host}:${config.port}/api/2.0/jobs/`,
      ''
    ].join('\n') + '\n')
  }
}

closeWithGrace({ delay: 30_000 }, async ({ signal, err }) => {
  if (err) app.log.error({ err }, 'closing after an error')
  else app.log.info({ signal }, 'closing')
  await app.close()
  await embedded?.stop()
})

await app.listen({ host: config.host, port: config.port })
app.log.info({ ms: Date.now() - started }, 'clonejobs is serving')
