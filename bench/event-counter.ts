/**
 * A child process of bench/jobs-throughput.ts: LISTENs on the change-event channel of one database
 * and counts the events each NOTIFY carries, per resource id, outside the measured process (so the
 * count costs the engine's process nothing). `node --import tsx bench/event-counter.ts URL`; it
 * sends 'ready' over IPC once listening, and answers a 'report' message with [id, count] pairs.
 */
import pg from 'pg'
import { parseEvents } from '../src/engine/events.ts'
import { CHANNELS } from '../src/engine/listener.ts'

const counts = new Map<string, number>()
const client = new pg.Client({ connectionString: process.argv[2] })
await client.connect()
client.on('notification', msg => {
  for (const { resourceId: r } of parseEvents(msg.payload ?? '')) counts.set(r, (counts.get(r) ?? 0) + 1)
})
await client.query(`LISTEN "${CHANNELS.events}"`)
process.on('message', (m) => {
  if (m !== 'report') return
  process.send?.([...counts], () => { void client.end().finally(() => process.exit(0)) })
})
process.send?.('ready')
