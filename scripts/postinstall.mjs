// After `npm ci`: generates the Prisma client for development (typecheck, tests, tsx). A production
// install (`--omit=dev`) has no Prisma CLI and needs none: dist/ carries the compiled client.
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'

let cli
try {
  cli = createRequire(import.meta.url).resolve('prisma/build/index.js')
} catch {
  process.exit(0)
}
const r = spawnSync(process.execPath, [cli, 'generate'], { stdio: 'inherit' })
process.exit(r.status ?? 1)
