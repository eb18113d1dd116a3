// SessionLocks' HELD_SQL: a statement proves, at the moment it runs, that a backend still holds a
// named session lock (a claims connection that died is noticed by its holder only at the next
// ping). The bigint key is split across pg_locks' classid and objid: many names, so negative and
// positive hashes and both halves are covered.
import t from 'tap'
import pg from 'pg'
import { HELD_SQL, SessionLocks, groupHeldSql, memberName } from '../../src/db/session-locks.ts'
import { createTestDatabase } from '../helpers/db.ts'

const databaseUrl = await createTestDatabase(t)
const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 })
t.teardown(() => pool.end())
const held = async (pid: number, name: string) => (await pool.query<{ held: boolean }>(HELD_SQL, [pid, name])).rows[0].held

t.test('held by its backend, under its name only, until released', async t => {
  const locks = new SessionLocks({ connectionString: databaseUrl })
  t.teardown(() => locks.close())
  const names = Array.from({ length: 64 }, (_, i) => `upload_chunk:${crypto.randomUUID()}:${i}`)
  const taken = []
  for (const name of names) {
    const lock = await locks.tryLock(name)
    if (lock === undefined) throw new Error(`could not take ${name}`)
    taken.push(lock)
  }
  const hashes = (await pool.query<{ h: string }>('SELECT hashtextextended(n, 0)::text AS h FROM unnest($1::text[]) n', [names])).rows.map(r => BigInt(r.h))
  t.ok(hashes.some(h => h < 0n) && hashes.some(h => h > 0n), 'negative and positive keys among them')
  const pid = taken[0].pid
  t.ok(Number.isInteger(pid) && pid > 0, `the holder's backend pid (${pid})`)
  let yes = 0
  for (const lock of taken) if (await held(lock.pid, lock.name)) yes++
  t.equal(yes, names.length, 'every lock is seen as held by its backend')
  t.notOk(await held(pid, `upload_chunk:${crypto.randomUUID()}:0`), 'a name not taken is not held')
  t.notOk(await held(pid + 1_000_000, names[0]), 'nor is a lock held by another backend')
  await taken[0].release()
  t.notOk(await held(pid, names[0]), 'a released lock is not held')
  t.ok(await held(pid, names[1]), 'the others still are')
})

t.test('members of a group (<group>#<n>): held by name, and the group is held while any member is', async t => {
  const locks = new SessionLocks({ connectionString: databaseUrl })
  t.teardown(() => locks.close())
  const groupHeld = async (group: string) => (await pool.query<{ held: boolean }>(`SELECT ${groupHeldSql('$1')} AS held`, [group])).rows[0].held
  const groups = Array.from({ length: 16 }, () => `upload_chunk:${crypto.randomUUID()}`)
  // up to a chunk number's largest, 2^31 - 1
  const members = groups.map((g, i) => memberName(g, i === 15 ? 2_147_483_647 : i * 61_000_000))
  const taken = []
  for (const name of members) {
    const lock = await locks.tryLock(name)
    if (lock === undefined) throw new Error(`could not take ${name}`)
    taken.push(lock)
  }
  const hashes = (await pool.query<{ h: number }>('SELECT hashtext(g) AS h FROM unnest($1::text[]) g', [groups])).rows.map(r => r.h)
  t.ok(hashes.some(h => h < 0) && hashes.some(h => h > 0), 'negative and positive group keys among them')
  for (const lock of taken) t.ok(await held(lock.pid, lock.name), `${lock.name} is held`)
  t.notOk(await held(taken[0].pid, memberName(groups[0], 1)), 'another member of the group is not')
  for (const g of groups) t.ok(await groupHeld(g), `group ${g} is held`)
  t.notOk(await groupHeld(`upload_chunk:${crypto.randomUUID()}`), 'a group none of whose members is taken is not')
  t.equal(await locks.tryLock(members[0]), undefined, 'a member cannot be taken twice')
  const other = new SessionLocks({ connectionString: databaseUrl })
  t.teardown(() => other.close())
  t.equal(await other.tryLock(members[1]), undefined, 'nor by another owner')
  await taken[0].release()
  t.notOk(await groupHeld(groups[0]), 'released: the group is free')
  t.notOk(await held(taken[0].pid, members[0]))
  t.ok(await groupHeld(groups[1]), 'the others are still held')
  t.throws(() => memberName('g', 2_147_483_648), RangeError)
  // digits past a member's largest number: a plain name, taken and looked at as one
  const group = `upload_chunk:${crypto.randomUUID()}`
  const plain = await locks.tryLock(`${group}#9999999999`)
  if (plain === undefined) throw new Error('could not take the plain name')
  t.ok(await held(plain.pid, plain.name), 'a name ending in # and more digits than a member\'s is held as a plain name')
  t.notOk(await groupHeld(group), 'it holds no member of a group')
  await plain.release()
  t.notOk(await held(plain.pid, plain.name))
  t.throws(() => memberName('g', -1), RangeError)
})

t.test('a terminated claims connection holds nothing, whether or not its holder has noticed', async t => {
  // no pings: the holder learns of the loss only from the connection's own events
  const locks = new SessionLocks({ connectionString: databaseUrl }, { pingIntervalMs: 3_600_000 })
  t.teardown(() => locks.close())
  const lock = await locks.tryLock('upload_chunk:terminated:0')
  if (lock === undefined) throw new Error('not taken')
  t.ok(await held(lock.pid, lock.name))
  await pool.query('SELECT pg_terminate_backend($1::int)', [lock.pid])
  await t.resolves(new Promise<void>((resolve, reject) => {
    const deadline = Date.now() + 5000
    const poll = async () => {
      if (!await held(lock.pid, lock.name)) return resolve()
      if (Date.now() > deadline) return reject(new Error('still held'))
      setTimeout(() => { poll().catch(reject) }, 50)
    }
    poll().catch(reject)
  }), 'the lock is gone from the server')
})

t.test('claims asked for at once go over the one connection one statement at a time (pg refuses a query sent while another runs)', async t => {
  const warnings: string[] = []
  const onWarning = (w: Error) => { warnings.push(w.message) }
  process.on('warning', onWarning)
  t.teardown(() => { process.off('warning', onWarning) })
  const locks = new SessionLocks({ connectionString: databaseUrl })
  t.teardown(() => locks.close())
  const group = `upload_chunk:${crypto.randomUUID()}`
  const taken = await Promise.all(Array.from({ length: 20 }, (_, n) => locks.tryLock(memberName(group, n))))
  t.ok(taken.every(l => l !== undefined), 'every claim was taken')
  let yes = 0
  for (const lock of taken) if (await held(lock!.pid, lock!.name)) yes++
  t.equal(yes, 20, 'and is held')
  await Promise.all(taken.map(l => l!.release()))
  for (const lock of taken) t.notOk(await held(lock!.pid, lock!.name), `${lock!.name} was released`)
  await new Promise(resolve => setImmediate(resolve))
  t.same(warnings.filter(w => /already executing a query/.test(w)), [], 'no query was sent while another ran')
})
