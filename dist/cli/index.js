// Operator commands: `clonejobs migrate` and `clonejobs user add|list|passwd|remove`. Uses
// DATABASE_URL, or the embedded PostgreSQL under DATA_DIR/pg: the running one, found through its
// data folder (port and password files), or one started for the command and stopped after it.
import path from 'node:path';
import { Command } from 'commander';
import { loadConfig } from "../config.js";
import { createPrisma } from "../db/client.js";
import { EmbeddedSetupError, startEmbeddedPostgres } from "../db/embedded.js";
import { runMigrations } from "../db/migrate.js";
import { AccountError, addAccount, generatePassword, removeAccount, setPassword } from "../services/accounts.js";
async function withUrl(fn) {
    const config = loadConfig();
    const embedded = config.databaseUrl ? undefined : await startEmbeddedPostgres({ dir: path.join(config.dataDir, 'pg'), port: config.embeddedPgPort, join: true });
    try {
        return await fn(config.databaseUrl ?? embedded.url);
    }
    finally {
        await embedded?.stop();
    }
}
async function withDatabase(fn) {
    return withUrl(async (url) => {
        await runMigrations(url);
        const prisma = createPrisma(url, { max: 2 });
        try {
            return await fn(prisma);
        }
        finally {
            await prisma.$disconnect();
        }
    });
}
async function readPasswordFromStdin() {
    if (process.stdin.isTTY)
        return undefined;
    const chunks = [];
    for await (const chunk of process.stdin)
        chunks.push(chunk);
    const text = Buffer.concat(chunks).toString('utf8').split('\n')[0]?.trim();
    return text || undefined;
}
const program = new Command('clonejobs').description('clonejobs operator commands');
program.command('migrate')
    .description('apply the database migrations not applied yet (the service also applies them at start)')
    .action(async () => {
    const applied = await withUrl(url => runMigrations(url));
    console.log(applied.length ? `applied ${applied.join(', ')}` : 'the database is up to date');
});
const user = program.command('user').description('manage accounts');
user.command('add <email>')
    .description('create an account; prints a generated password unless --password or stdin gives one')
    .option('-p, --password <password>', 'the password (at least 8 characters)')
    .action(async (email, opts) => {
    const given = opts.password ?? await readPasswordFromStdin();
    const password = given ?? generatePassword();
    const account = await withDatabase(prisma => addAccount(prisma, email, password));
    console.log(`created ${account.email} (${account.id})`);
    if (!given)
        console.log(`password: ${password}`);
});
user.command('list')
    .description('list accounts')
    .action(async () => {
    const accounts = await withDatabase(prisma => prisma.account.findMany({ orderBy: { email: 'asc' } }));
    for (const a of accounts)
        console.log(`${a.email}\t${a.id}\t${a.createdAt.toISOString()}`);
    if (accounts.length === 0)
        console.log('no accounts');
});
user.command('passwd <email>')
    .description('set a new password; prints a generated one unless --password or stdin gives one')
    .option('-p, --password <password>', 'the new password')
    .action(async (email, opts) => {
    const given = opts.password ?? await readPasswordFromStdin();
    const password = given ?? generatePassword();
    const account = await withDatabase(prisma => setPassword(prisma, email, password));
    console.log(`password changed for ${account.email}`);
    if (!given)
        console.log(`password: ${password}`);
});
user.command('remove <email>')
    .description('delete an account and everything it owns')
    .action(async (email) => {
    const account = await withDatabase(prisma => removeAccount(prisma, email));
    console.log(`removed ${account.email}`);
});
try {
    await program.parseAsync(process.argv);
}
catch (err) {
    if (err instanceof AccountError || err instanceof EmbeddedSetupError) {
        console.error(`error: ${err.message}`);
        process.exit(1);
    }
    else {
        throw err;
    }
}
//# sourceMappingURL=index.js.map