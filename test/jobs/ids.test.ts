// New job ids: RFC 9562 version 7 UUIDs (time first), unique, in time order across milliseconds.
import t from 'tap'
import { newJobId } from '../../src/engine/enqueue.ts'
import { sleep } from '../helpers/jobs.ts'

t.test('job ids are unique UUIDv7s that sort by creation time', async t => {
  const first = Array.from({ length: 5000 }, () => newJobId())
  t.ok(first.every(id => /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(id)), 'version 7, RFC variant')
  t.equal(new Set(first).size, first.length, 'no two alike (the random pool is refilled, not reused)')
  await sleep(5)
  const later = newJobId()
  t.ok(first.every(id => id < later), 'an id made later sorts after the earlier ones')
  const ms = parseInt(later.replace(/-/g, '').slice(0, 12), 16)
  t.ok(Math.abs(ms - Date.now()) < 60_000, 'its first 48 bits are the time in milliseconds')
})
