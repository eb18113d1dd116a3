// Availability groups (domain/availability.ts): objects grouped by the host they sit on, an
// object on no single host alone, and one object's group.
import t from 'tap'
import { availabilityGroups, groupOf } from '../../src/domain/availability.ts'

t.test('one group per host, in first-seen order; an object on no single host is a group of its own', async t => {
  t.same(availabilityGroups([]), [])
  t.same(availabilityGroups([{ id: 'a', host: 'h' }, { id: 'b', host: 'h' }]), [['a', 'b']])
  t.same(availabilityGroups([
    { id: 'a', host: 'h1' }, { id: 'b', host: null }, { id: 'c', host: 'h2' }, { id: 'd', host: 'h1' }, { id: 'e', host: null }
  ]), [['a', 'd'], ['b'], ['c'], ['e']])
  t.same(availabilityGroups([{ id: 'a', host: '' }, { id: 'b', host: '' }]), [['a', 'b']], 'any string is a host, the empty one too')
})

t.test('groupOf: the group holding the id, itself included; [] when none does', async t => {
  const groups = [['a', 'd'], ['b']]
  t.same(groupOf(groups, 'd'), ['a', 'd'])
  t.same(groupOf(groups, 'b'), ['b'])
  t.same(groupOf(groups, 'x'), [])
})
