// tap `after`: stops the embedded PostgreSQL daemon when no other tap run still uses it.
import { stopDaemon, unregisterRun } from './test-db.ts'

if (unregisterRun(process.ppid)) stopDaemon()
