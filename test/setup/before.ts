// tap `before`: starts (or finds) the test PostgreSQL and builds the migrated template once.
import { registerRun, setupTestServer } from './test-db.ts'

registerRun(process.ppid)
const state = await setupTestServer()
console.log(`# test database server ready (template ${state.template}${state.daemonPid ? ', embedded PostgreSQL' : ''})`)
