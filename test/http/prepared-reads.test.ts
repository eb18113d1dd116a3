// The raw-SQL read paths run each statement shape as a named (prepared) statement, planned once per
// connection; past a cap of shapes the rest run unnamed, so no client grows the backends' caches.
import pg from 'pg'
import t from 'tap'
import { sqlRows } from '../../src/http/list-sql.ts'
import { createTestDatabase } from '../helpers/db.ts'

t.test('a read shape is prepared once per connection and reused; past the cap, shapes run unnamed', async t => {
  const url = await createTestDatabase(t)
  // one connection, so pg_prepared_statements shows what this pool's session prepared
  const pool = new pg.Pool({ connectionString: url, max: 1 })
  t.teardown(() => pool.end())
  const prepared = async () => (await pool.query<{ name: string }>("SELECT name FROM pg_prepared_statements WHERE name LIKE 'read\\_%' ORDER BY name")).rows.map(r => r.name)
  const text = 'SELECT $1::int + 1 AS n /* prepared-reads test */'
  t.same(await sqlRows(pool, text, [41]), [{ n: 42 }])
  t.same(await sqlRows(pool, text, [1]), [{ n: 2 }], 'the same shape with other values')
  const one = await prepared()
  t.equal(one.length, 1, 'one prepared statement for the shape')
  // many distinct shapes: the process stops naming new ones at its cap (500)
  for (let k = 0; k < 520; k++) await sqlRows(pool, `SELECT $1::int + ${k} AS n /* shape ${k} */`, [0])
  const after = await prepared()
  t.ok(after.length <= 500, `at most 500 shapes prepared (${after.length})`)
  t.ok(after.length >= 400, 'the others were prepared')
  t.same(await sqlRows(pool, 'SELECT $1::int + 1000 AS n /* past the cap */', [1]), [{ n: 1001 }], 'a shape past the cap still runs (unnamed)')
  t.same(await prepared(), after, 'and is not prepared')
})
