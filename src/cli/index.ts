// Operator commands: `clonejobs serve [--role api|worker|all]`, `clonejobs migrate` and `clonejobs
// user add|list|passwd|remove`. Uses DATABASE_URL, or the embedded PostgreSQL under DATA_DIR/pg: the
// running one, found through its data folder (port and password files), or one started for the
// command and stopped after it.
import path from 'node:path'
import { Command } from 'commander'
import { ROLES, loadConfig } from '../config.ts'
import { createDatabase, type PrismaClient } from '../db/client.ts'
import { EmbeddedSetupError, startEmbeddedPostgres } from '../db/embedded.ts'
import { runMigrations } from '../db/migrate.ts'
import { AccountError, addAccount, removeAccount, setPassword } from '../features/accounts/service.ts'
import { generatePassword } from '../domain/passwords.ts'

async function withUrl<T> (fn: (url: string) => Promise<T>): Promise<T> {
  const config = loadConfig()
  const embedded = config.databaseUrl ? undefined : await startEmbeddedPostgres({ dir: path.join(config.dataDir, 'pg'), port: config.embeddedPgPort, join: true })
  try {
    return await fn(config.databaseUrl ?? embedded!.url)
  } finally {
    await embedded?.stop()
  }
}

async function withDatabase<T> (fn: (prisma: PrismaClient) => Promise<T>): Promise<T> {
  return withUrl(async url => {
    await runMigrations(url)
    const { prisma, close } = createDatabase(url, { max: 2 })
    try {
      return await fn(prisma)
    } finally {
      await close()
    }
  })
}

async function readPasswordFromStdin (): Promise<string | undefined> {
  if (process.stdin.isTTY) return undefined
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  const text = Buffer.concat(chunks).toString('utf8').split('\n')[0]?.trim()
  return text || undefined
}

const program = new Command('clonejobs').description('clonejobs operator commands')

program.command('serve')
  .description('run the service (npm start runs it with every role)')
  .option('--role <role>', `what this process does: ${ROLES.join(' | ')}`, process.env.ROLE || 'all')
  .action(async (opts: { role: string }) => {
    if (!(ROLES as readonly string[]).includes(opts.role)) program.error(`error: --role must be one of ${ROLES.join(', ')}`)
    // the server entry reads its settings from the environment, ROLE among them
    process.env.ROLE = opts.role
    await import('../server.ts')
  })

program.command('migrate')
  .description('apply the database migrations not applied yet (the service also applies them at start)')
  .action(async () => {
    const applied = await withUrl(url => runMigrations(url))
    console.log(applied.length ? `applied ${applied.join(', ')}` : 'the database is up to date')
  })

const user = program.command('user').description('manage accounts')

user.command('add <email>')
  .description('create an account; prints a generated password unless --password or stdin gives one')
  .option('-p, --password <password>', 'the password (at least 8 characters)')
  .action(async (email: string, opts: { password?: string }) => {
    const given = opts.password ?? await readPasswordFromStdin()
    const password = given ?? generatePassword()
    const account = await withDatabase(prisma => addAccount(prisma, email, password))
    console.log(`created ${account.email} (${account.id})`)
    if (!given) console.log(`password: ${password}`)
  })

user.command('list')
  .description('list accounts')
  .action(async () => {
    const accounts = await withDatabase(prisma => prisma.account.findMany({ orderBy: { email: 'asc' } }))
    for (const a of accounts) console.log(`${a.email}\t${a.id}\t${a.createdAt.toISOString()}`)
    if (accounts.length === 0) console.log('no accounts')
  })

user.command('passwd <email>')
  .description('set a new password; prints a generated one unless --password or stdin gives one')
  .option('-p, --password <password>', 'the new password')
  .action(async (email: string, opts: { password?: string }) => {
    const given = opts.password ?? await readPasswordFromStdin()
    const password = given ?? generatePassword()
    const account = await withDatabase(prisma => setPassword(prisma, email, password))
    console.log(`password changed for ${account.email}`)
    if (!given) console.log(`password: ${password}`)
  })

user.command('remove <email>')
  .description('delete an account and everything it owns')
  .action(async (email: string) => {
    const account = await withDatabase(prisma => removeAccount(prisma, email))
    console.log(`removed ${account.email}`)
  })

try {
  await program.parseAsync(process.argv)
} catch (err) {
  if (err instanceof AccountError || err instanceof EmbeddedSetupError) {
    console.error(`error: ${err.message}`)
    process.exit(1)
  } else {
    throw err
  }
}
