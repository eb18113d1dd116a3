#!/usr/bin/env node
// `npx clonejobs ...`: runs the TypeScript CLI through tsx.
import { register } from 'tsx/esm/api'

register()
await import('../src/cli/index.ts')
