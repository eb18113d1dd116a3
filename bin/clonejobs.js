#!/usr/bin/env node
// `npx clonejobs ...`: the compiled CLI in dist/, or the TypeScript source through tsx (a dev
// dependency) when dist/ is missing or older than src/ in a checkout being worked on.
import { staleReason } from '../scripts/ensure-built.mjs'

if (staleReason()) {
  const { register } = await import('tsx/esm/api')
  register()
  await import('../src/cli/index.ts')
} else {
  await import('../dist/cli/index.js')
}
