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
  t.same(filtersToWhere(parseFilters({ name__contains: '100%_a\\b' }, spec)), { AND: [{ name: { contains: '100\\%\\_a\\\\b', mode: 'insensitive' } }] }, 'LIKE\'s %, _ and \\ escaped: contains is a substring')
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

t.test('a filter field with an operator it does not have is an error, not an ignored parameter', async t => {
  // ignored, these answered with every object, unfiltered
  t.equal(paramOfError(() => parseFilters({ status__in: 'mounted,unmounted' }, spec)), 'status__in')
  t.equal(paramOfError(() => parseFilters({ name__startswith: 'a' }, spec)), 'name__startswith')
  t.equal(paramOfError(() => parseFilters({ tag__name: 'db' }, spec)), 'tag__name', 'the docs\' tag__name: tags here are uuids')
  t.equal(paramOfError(() => parseFilters({ created__exact: '2026-01-01' }, spec)), 'created__exact')
  t.throws(() => parseFilters({ status__in: 'mounted' }, spec), { message: 'Filter status__in is not supported: status takes status=a,b (any of)' }, 'the message says what the field takes')
  t.throws(() => parseFilters({ created__range: 'x' }, spec), { message: 'Filter created__range is not supported: created takes created=a,b (any of), created__lt=, created__lte=, created__gt=, created__gte=' })
  t.throws(() => parseFilters({ name__starts: 'x' }, spec), { message: 'Filter name__starts is not supported: name takes name=a,b (any of), name__contains=' })
  t.same(parseFilters({ other__in: 'x', limit__gt: '1', __proto__x: 'y' }, spec), [], 'a parameter whose field is not a filter stays ignored')
})

t.test('order_by', async t => {
  const order = { fields: { name: 'name', uuid: 'id', last_modified: 'lastModified' }, default: 'name' }
  t.same(parseOrder(undefined, order), [{ name: 'asc' }, { id: 'asc' }], 'default, with an id tiebreak')
  t.same(parseOrder('-last_modified,name', order), [{ lastModified: 'desc' }, { name: 'asc' }, { id: 'asc' }])
  t.same(parseOrder('-uuid', order), [{ id: 'desc' }], 'no duplicate tiebreak')
  t.throws(() => parseOrder('password', order), OrderError)
})
