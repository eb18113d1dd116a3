// Clone naming strategies of spec §2.10.
import t from 'tap'
import { cloneName, nextCounter } from '../../src/domain/naming.ts'

const now = new Date('2026-11-23T09:45:56Z')

t.test('NONE keeps the name (and is the default for unknown values)', async t => {
  t.equal(cloneName('test_drive_x', 'NONE', now), 'test_drive_x')
  t.equal(cloneName('test_drive_x', 'whatever', now), 'test_drive_x')
})

t.test('COUNTER appends _1 or increments a trailing number', async t => {
  t.equal(cloneName('test_drive_x', 'COUNTER', now), 'test_drive_x_1')
  t.equal(cloneName('test_drive_x_1', 'COUNTER', now), 'test_drive_x_2')
  t.equal(cloneName('disk_9', 'COUNTER', now), 'disk_10')
  t.equal(nextCounter(''), '_1')
})

t.test('DATE appends or replaces a date; same date falls back to a counter', async t => {
  t.equal(cloneName('test_drive_x', 'DATE', now), 'test_drive_x-2026-11-23')
  t.equal(cloneName('test_drive_x-2014-06-05', 'DATE', now), 'test_drive_x-2026-11-23', 'an old date is replaced')
  t.equal(cloneName('test_drive_x-2026-11-23', 'DATE', now), 'test_drive_x-2026-11-23_1', 'today: counter on top')
  t.equal(cloneName('test_drive_x-2026-11-23_1', 'DATE', now), 'test_drive_x-2026-11-23_2')
})

t.test('TIMESTAMP appends or replaces a timestamp; same second falls back to a counter', async t => {
  t.equal(cloneName('srv', 'TIMESTAMP', now), 'srv-2026-11-23 09:45:56')
  t.equal(cloneName('srv-2014-06-05 09:45:56', 'TIMESTAMP', now), 'srv-2026-11-23 09:45:56')
  t.equal(cloneName('srv-2026-11-23 09:45:56', 'TIMESTAMP', now), 'srv-2026-11-23 09:45:56_1')
  t.equal(cloneName('srv-2026-11-23 09:45:56_1', 'TIMESTAMP', now), 'srv-2026-11-23 09:45:56_2')
})
