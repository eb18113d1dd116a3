// Change-event NOTIFY payloads: one statement's events go out in payloads of at most
// EVENTS_PER_NOTIFY events, as runs per (owner, type, change); parseEvents gives back every event
// exactly, in id order, whatever the mix of owners and kinds, and escapes nothing away.
import t from 'tap'
import pg from 'pg'
import { EVENTS_PER_NOTIFY, notifyEventsSql, parseEvents } from '../../src/engine/events.ts'
import { CHANNELS } from '../../src/engine/listener.ts'
import { buildTestApp } from '../helpers/app.ts'

const { databaseUrl } = await buildTestApp(t, { runWorkers: false })

t.test('a statement with 100 mixed events: payloads of at most 40, every event back in order', async t => {
  const listen = new pg.Client({ connectionString: databaseUrl })
  const db = new pg.Client({ connectionString: databaseUrl })
  await listen.connect()
  await db.connect()
  t.teardown(async () => { await listen.end(); await db.end() })
  const payloads: string[] = []
  listen.on('notification', m => { if (m.channel === CHANNELS.events) payloads.push(m.payload ?? '') })
  await listen.query(`LISTEN "${CHANNELS.events}"`)
  const owners = ['00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-000000000002']
  const kinds = ['added', 'changed', 'removed']
  const events = Array.from({ length: 100 }, (_, k) => ({
    id: 1000 + k,
    o: owners[k % 2],
    t: k % 5 === 0 ? 'drives' : 'jobs',
    r: k === 7 ? 'odd "id" \\ with quotes' : `${k}-resource`,
    c: kinds[k % 3]
  }))
  await db.query(`
    WITH src AS (
      SELECT * FROM json_to_recordset($1::json) AS s(id bigint, owner_id uuid, resource_type text, resource_id text, change text)
    )
    SELECT count(*) FROM (${notifyEventsSql('src')}) n`, [JSON.stringify(events.map(e => ({ id: e.id, owner_id: e.o, resource_type: e.t, resource_id: e.r, change: e.c })))])
  await new Promise(resolve => setTimeout(resolve, 200))
  t.equal(payloads.length, Math.ceil(100 / EVENTS_PER_NOTIFY), 'one NOTIFY per 40 events')
  const parsed = payloads.map(parseEvents)
  t.ok(parsed.every(p => p.length <= EVENTS_PER_NOTIFY), 'none over 40')
  t.same(parsed.flat(), events.map(e => ({ id: String(e.id), ownerId: e.o, resourceType: e.t, resourceId: e.r, change: e.c })), 'every event once, exactly, in id order')
  t.ok(payloads.every(p => p.length < 8000), 'under PostgreSQL\'s payload limit')
})

t.test('parseEvents also reads single events, and ignores what it cannot read', async t => {
  t.same(parseEvents('{"id":"5","o":"a","t":"drives","r":"x","c":"removed"}'), [{ id: '5', ownerId: 'a', resourceType: 'drives', resourceId: 'x', change: 'removed' }])
  t.same(parseEvents('[{"id":"12","o":"a","t":"jobs","r":"y"},{"id":"9","o":"a","t":"jobs","r":"x"}]').map(e => e.id), ['9', '12'], 'sorted by id as numbers')
  t.same(parseEvents('not json'), [])
  t.same(parseEvents('[null, 3, {"o":"a","t":"jobs","c":"added","i":[1],"r":[2]}]'), [], 'a run whose resource ids are not strings yields nothing')
})
