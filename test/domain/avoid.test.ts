// `avoid` (§2.11), the one parser behind drive create, drive and server clone, server start and
// uploads: uuid lists in every accepted form, and a validation error at avoid for anything else.
import t from 'tap'
import { parseAvoid } from '../../src/domain/avoid.ts'

const A = '0f1e2d3c-4b5a-4697-8877-665544332211'
const B = 'AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE'

t.test('avoid: one uuid, a comma list, repeated parameters; lowercased, deduplicated, in order', async t => {
  t.same(parseAvoid(undefined), [])
  t.same(parseAvoid(''), [])
  t.same(parseAvoid(A), [A])
  t.same(parseAvoid(`${B}, ${A},${A}`), [B.toLowerCase(), A])
  t.same(parseAvoid([A, B]), [A, B.toLowerCase()])
  t.same(parseAvoid(`${A},,`), [A], 'empty items are ignored')
})

t.test('avoid: anything that is not a uuid is refused at error point avoid', async t => {
  for (const bad of ['nope', `${A},x`, `${A}0`, '../etc', '/api/2.0/drives/' + A + '/']) {
    t.throws(() => parseAvoid(bad), { name: 'DomainError', code: 'validation', point: 'avoid', message: /^avoid must be a comma-separated list of uuids, got / }, bad)
  }
})
