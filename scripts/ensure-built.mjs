#!/usr/bin/env node
// Whether dist/ is older than what it is built from, and (run as a script: `npm start`'s prestart)
// building it when it is. Plain JavaScript: it runs before anything is compiled.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const STAMP = path.join(ROOT, 'dist', '.built')
const INPUTS = ['src', 'dashboard/src', 'dashboard/index.html', 'prisma/schema.prisma', 'tsconfig.json', 'tsconfig.build.json', 'package-lock.json']
// outputs of the build that live in src/
const SKIP = new Set([path.join(ROOT, 'src/db/generated')])

function newest (file) {
  let st
  try { st = fs.statSync(file) } catch { return 0 }
  if (!st.isDirectory()) return st.mtimeMs
  if (SKIP.has(file)) return 0
  let max = st.mtimeMs
  for (const name of fs.readdirSync(file)) max = Math.max(max, newest(path.join(file, name)))
  return max
}

/** Why dist/ needs building, or undefined when it is up to date (or there is no source to build). */
export function staleReason () {
  if (!fs.existsSync(path.join(ROOT, 'src'))) return undefined
  let built
  try { built = fs.statSync(STAMP).mtimeMs } catch { return 'dist/ has not been built' }
  if (fs.existsSync(path.join(ROOT, 'dashboard')) && !fs.existsSync(path.join(ROOT, 'dashboard/dist/index.html'))) return 'the dashboard has not been built'
  const changed = INPUTS.find(input => newest(path.join(ROOT, input)) > built)
  return changed ? `${changed} changed since the last build` : undefined
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const reason = staleReason()
  if (reason) {
    process.stderr.write(`clonejobs: building (${reason})\n`)
    const build = spawnSync('npm', ['run', 'build', '--silent'], { cwd: ROOT, stdio: 'inherit' })
    if (build.status !== 0) process.exit(build.status ?? 1)
  }
}
