// The purge holds its lock on a connection of its own that stays idle while the batches run on
// the pool. Its backend ending then (a restart, an administrator's terminate) threw an unhandled
// 'error' event and ended the process. Now that run fails (its unlock cannot be sent), is
// logged, and the next run goes ahead.
import t from 'tap'
import { createDatabase } from '../../src/db/client.ts'
import { purgeOnce } from '../../src/engine/purge.ts'
import { createTestDatabase } from '../helpers/db.ts'
import { memoryLogger } from '../helpers/log.ts'

const databaseUrl = await createTestDatabase(t)

t.test('the purge lock\'s connection ends mid-run: the run fails, the process lives, the next run goes ahead', async t => {
  const { prisma, close } = createDatabase(databaseUrl, { max: 3 })
  t.teardown(close)
  const { log, lines } = memoryLogger()
  let killed = false
  // the first batch ends the lock holder's backend first (the only advisory lock in this database)
  const killing = new Proxy(prisma, {
    get (target, key) {
      const v: unknown = Reflect.get(target, key, target)
      if (key !== '$queryRaw' || typeof v !== 'function') return typeof v === 'function' ? v.bind(target) : v
      return async (...args: unknown[]) => {
        if (!killed) {
          killed = true
          const ended = await target.$queryRaw<Array<{ ended: boolean }>>`
            SELECT pg_terminate_backend(pid, 10000) AS ended FROM pg_locks
            WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`
          t.same(ended, [{ ended: true }], 'the lock holder\'s backend has ended')
          await new Promise(resolve => setTimeout(resolve, 200))
        }
        return (v as (...a: unknown[]) => unknown).apply(target, args)
      }
    }
  })
  await t.rejects(purgeOnce({ databaseUrl, prisma: killing, log, retentionDays: 3 }), 'the run fails: its lock is gone')
  t.ok(killed)
  t.ok(lines.some(l => /purge lock's connection was lost/.test(l.msg)), 'and the lost connection is logged')
  const next = await purgeOnce({ databaseUrl, prisma, log, retentionDays: 3 })
  t.equal(next.ran, true, 'the next run takes the lock and runs')
})
