// tap `after`: stops the embedded PostgreSQL daemon if this run started one.
import { stopDaemon } from './test-db.ts'

stopDaemon()
