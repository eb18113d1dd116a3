// The filter syntax of spec §1.8 and order_by, as pure functions.
import t from 'tap'
import { FilterError, OrderError, filtersToWhere, parseFilters, parseOrder, splitAlternatives, type FilterSpec } from '../../src/domain/filters.ts'

t.test('comma alternatives with escapes', async t => {
  t.same(splitAlternatives('a,b'), ['a', 'b'])
  t.same(splitAlternatives('name\\,long\\\\,name2'), ['name,long\\', 'name2'], 'the spec example')
  t.same(splitAlternatives('plain'), ['plain'])
  t.same(splitAlternatives(''), [''])
  t.same(splitAlternatives('a\\b'), ['a\\b'], 'a backslash before anything else is literal')
})

const spec: FilterSpec = {
  name: { column: 'name', kind: 'string' },
  status: { column: 'status', kind: 'string', choices: ['mounted', 'unmounted'] },
  uuid: { column: 'id', kind: 'uuid' },
  tag: { column: 'tags', kind: 'array' },
  created: { column: 'created', kind: 'date' }
}

t.test('parameters AND, alternatives OR, contains, comparisons', async t => {
  const where = filtersToWhere(parseFilters({ name: 'a,b', name__contains: 'X', created__gte: '2026-01-01', limit: '5' }, spec))
  t.same(where, {
    AND: [
      { OR: [{ name: { equals: 'a' } }, { name: { equals: 'b' } }] },
      { name: { contains: 'X', mode: 'insensitive' } },
      { created: { gte: new Date('2026-01-01') } }
    ]
  })
  t.same(filtersToWhere(parseFilters({ tag: ['t1', 't2'] }, spec)), { AND: [{ tags: { has: 't1' } }, { tags: { has: 't2' } }] }, 'a repeated parameter ANDs')
  t.same(filtersToWhere(parseFilters({ name__icontains: 'x' }, spec)), { AND: [{ name: { contains: 'x', mode: 'insensitive' } }] })
  t.same(filtersToWhere(parseFilters({ fields: 'a', order_by: 'name' }, spec)), {}, 'non-filters are ignored')
})

function paramOfError (fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    return err instanceof FilterError ? err.param : 'not a FilterError'
  }
  return undefined
}

t.test('bad filter values are errors naming the parameter', async t => {
  t.equal(paramOfError(() => parseFilters({ status: 'mounted,flying' }, spec)), 'status')
  t.equal(paramOfError(() => parseFilters({ uuid: 'nope' }, spec)), 'uuid')
  t.equal(paramOfError(() => parseFilters({ created__lt: 'soon' }, spec)), 'created__lt')
  t.equal(paramOfError(() => parseFilters({ uuid__contains: 'x' }, spec)), 'uuid__contains', 'contains only on strings')
  t.equal(paramOfError(() => parseFilters({ name__gt: 'x' }, spec)), 'name__gt', 'comparisons only on dates and numbers')
})

t.test('order_by', async t => {
  const order = { fields: { name: 'name', uuid: 'id', last_modified: 'lastModified' }, default: 'name' }
  t.same(parseOrder(undefined, order), [{ name: 'asc' }, { id: 'asc' }], 'default, with an id tiebreak')
  t.same(parseOrder('-last_modified,name', order), [{ lastModified: 'desc' }, { name: 'asc' }, { id: 'asc' }])
  t.same(parseOrder('-uuid', order), [{ id: 'desc' }], 'no duplicate tiebreak')
  t.throws(() => parseOrder('password', order), OrderError)
})
