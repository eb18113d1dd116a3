// A drive storage that does not answer (Ceph down) is 503 with Retry-After for the client, never
// a 500, and its internals stay in the log.
import t from 'tap'
import { toApiError } from '../../src/http/error-handler.ts'
import { StorageError } from '../../src/storage/index.ts'

t.test('StorageError UNAVAILABLE maps to 503 backend with Retry-After', async t => {
  const e = toApiError(new StorageError('UNAVAILABLE', 'info x: monclient(hunting): authenticate timed out after 10'))
  t.equal(e.statusCode, 503)
  t.same(e.toJSON(), { error_type: 'backend', error_message: 'The drive storage is unavailable; try again later', error_point: null })
  t.equal(e.headers['retry-after'], '5')
  t.notMatch(e.message, /monclient/, 'no Ceph internals in the answer')
})

t.test('other storage errors stay internal (500)', async t => {
  t.equal(toApiError(new StorageError('IO', 'rbd exited with 5')).statusCode, 500)
})
