// Applies prisma/migrations with the Prisma CLI (`migrate deploy`), the tool made for it.
import { execFile } from 'node:child_process'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const run = promisify(execFile)
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

export async function runMigrations (databaseUrl: string): Promise<string> {
  const cli = createRequire(import.meta.url).resolve('prisma/build/index.js')
  const { stdout } = await run(process.execPath, [
    // see the comment in this preload: it lets the CLI exit as soon as it is done
    '--require', path.join(root, 'scripts/prisma-unref-timers.cjs'),
    cli, 'migrate', 'deploy'
  ], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: databaseUrl, CHECKPOINT_DISABLE: '1', PRISMA_HIDE_UPDATE_MESSAGE: '1' },
    maxBuffer: 16 * 1024 * 1024
  })
  return stdout
}
