// The event hub's record of delivered event ids (exactly-once across NOTIFY and catch-up): runs of
// consecutive ids, filled in any order, merged when a gap closes, pruned only below the floor and
// before the time given; checked against a plain Set on a shuffled stream.
import t from 'tap'
import { DeliveredIds } from '../../src/engine/events.ts'

t.test('answers like a set of the ids added, in any order, in few runs', async t => {
  const d = new DeliveredIds()
  const set = new Set<number>()
  // statements of 1-40 consecutive ids, delivered in commit order: neighbours swap, some never come
  const ids: number[] = []
  let next = 1
  const statements: number[][] = []
  while (next < 5000) {
    const n = 1 + Math.floor(Math.random() * 40)
    statements.push(Array.from({ length: n }, (_, k) => next + k))
    next += n
  }
  for (let i = 0; i + 1 < statements.length; i += 2) if (Math.random() < 0.3) [statements[i], statements[i + 1]] = [statements[i + 1], statements[i]]
  for (const st of statements) if (Math.random() > 0.02) ids.push(...st)
  let early = 0
  for (const id of ids) { if (d.has(id)) early++; d.add(id, 1); set.add(id) }
  t.equal(early, 0, 'no id is held before it is added')
  let wrong = 0
  for (let id = 0; id <= next + 5; id++) if (d.has(id) !== set.has(id)) wrong++
  t.equal(wrong, 0, 'every id from 0 to the end answers as the set does')
  t.ok(d.runs < statements.length / 5, `${d.runs} runs for ${ids.length} ids`)
})

t.test('merges a gap that closes, on either side', async t => {
  const d = new DeliveredIds()
  for (const id of [1, 2, 3, 7, 8, 5]) d.add(id, 0)
  t.equal(d.runs, 3, '1-3, 5, 7-8')
  d.add(4, 0)
  t.equal(d.runs, 2, '1-5, 7-8')
  d.add(6, 0)
  t.equal(d.runs, 1, '1-8')
  t.ok([1, 4, 6, 8].every(id => d.has(id)) && !d.has(0) && !d.has(9))
})

t.test('prunes only whole runs at or below the floor, delivered before the time', async t => {
  const d = new DeliveredIds()
  for (let id = 1; id <= 10; id++) d.add(id, 100)
  for (let id = 20; id <= 30; id++) d.add(id, 200)
  d.add(40, 300)
  d.prune(25, 250)
  t.notOk(d.has(5), 'the first run (<= 25, delivered at 100) is forgotten')
  t.ok(d.has(20) && d.has(30), 'a run reaching above the floor is kept whole')
  d.prune(35, 250)
  t.notOk(d.has(25), 'then that run goes too')
  t.ok(d.has(40), 'a run delivered after the time is kept')
  d.prune(50, 250)
  t.ok(d.has(40), 'still: delivered at 300, after 250')
})
