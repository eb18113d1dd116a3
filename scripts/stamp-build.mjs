// Marks dist/ as built (scripts/ensure-built.mjs compares its inputs against this stamp).
import fs from 'node:fs'
fs.writeFileSync(new URL('../dist/.built', import.meta.url), new Date().toISOString() + '\n')
