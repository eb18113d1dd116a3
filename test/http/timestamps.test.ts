// The raw-SQL read paths parse PostgreSQL's timestamptz text without regular expressions and format
// CloudSigma times without them: both must agree with Date parsing / the regex formatter exactly.
import t from 'tap'
import { jsonWireTime, parseTimestamptz } from '../../src/http/list-sql.ts'
import { isoTime } from '../../src/http/uris.ts'

const byDateParsing = (s: string) => new Date(s.replace(' ', 'T').replace(/[+-]\d{2}(:\d{2})?$/, '+00:00'))

t.test('timestamptz text parses as Date parsing does (milliseconds truncated)', async t => {
  for (const s of ['2026-12-01 13:45:12.123456+00', '2026-12-01 13:45:12+00', '2026-12-01 13:45:12.5+00', '2026-12-01 13:45:12.12+00',
    '1999-01-31 23:59:59.999999+00', '2024-02-29 00:00:00.000001+00', '2026-12-01 13:45:12.123456+05:30', '0099-01-01 00:00:00+00', 'infinity']) {
    const a = parseTimestamptz(s).getTime()
    const b = byDateParsing(s).getTime()
    t.ok(a === b || (Number.isNaN(a) && Number.isNaN(b)), `${s} → ${String(a)}`)
  }
  t.equal(parseTimestamptz('2026-12-01 13:45:12.123456+00').toISOString(), '2026-12-01T13:45:12.123Z')
})

t.test('CloudSigma times: microseconds from milliseconds and +00:00', async t => {
  t.equal(isoTime(new Date('2026-12-01T13:45:12.123Z')), '2026-12-01T13:45:12.123000+00:00')
  t.equal(isoTime(new Date('2026-01-02T03:04:05Z')), '2026-01-02T03:04:05.000000+00:00')
  t.equal(isoTime(null), null)
  t.equal(isoTime(new Date(Date.UTC(10000, 0, 1))), '+010000-01-01T00:00:00.000000+00:00', 'years past 9999 keep the old formatting')
})

t.test('jsonWireTime: a timestamptz in PostgreSQL\'s JSON straight to the CloudSigma time, as the Date would give it', async t => {
  // as to_json writes them in a UTC session: the fraction's trailing zeros left out, none when whole
  for (const s of ['2026-12-01T13:45:12.123456+00:00', '2026-12-01T13:45:12+00:00', '2026-12-01T13:45:12.5+00:00', '2026-12-01T13:45:12.12+00:00',
    '1999-01-31T23:59:59.999999+00:00', '2024-02-29T00:00:00.000001+00:00', '2026-12-01T13:45:12.000999+00:00', '0099-01-01T00:00:00+00:00', '2026-12-01T13:45:12.123456+05:30']) {
    t.equal(jsonWireTime(s), isoTime(new Date(s)), s)
  }
  t.equal(jsonWireTime('2026-12-01T13:45:12.5+00:00'), '2026-12-01T13:45:12.500000+00:00')
  t.equal(jsonWireTime('2026-12-01T13:45:12+00:00'), '2026-12-01T13:45:12.000000+00:00')
  t.equal(jsonWireTime('2026-12-01T13:45:12.123999+00:00'), '2026-12-01T13:45:12.123000+00:00', 'milliseconds truncated')
})
