// The pure progress rules: percent and ETA from bytes, and the byte-weighted tree roll-up.
import t from 'tap'
import { etaOf, percentOf, rollUp, type ProgressNode } from '../../src/domain/progress.ts'

const node = (p: Partial<ProgressNode>): ProgressNode => ({ state: 'started', progress: 0, bytesDone: 0, bytesTotal: null, etaSeconds: null, description: null, children: [], ...p })

t.test('percent and eta', async t => {
  t.equal(percentOf(50, 200), 25)
  t.equal(percentOf(200, 200), 99, '100 is kept for success')
  t.equal(percentOf(5, null), undefined)
  t.equal(etaOf(25, 100, 10), 30, '25% in 10 s: 30 s left')
  t.equal(etaOf(0, 100, 10), undefined)
  t.equal(etaOf(25, 100, 0.1), undefined, 'no estimate from a blink')
})

t.test('a parent rolls up its children by bytes, not by count', async t => {
  const p = rollUp(node({
    children: [
      node({ state: 'success', progress: 100, bytesDone: 100, bytesTotal: 100 }),
      node({ bytesDone: 0, bytesTotal: 900, etaSeconds: 50 })
    ]
  }))
  t.equal(p.progress, 10, '100 of 1000 bytes, not 50%')
  t.equal(p.bytesTotal, 1000)
  t.equal(p.bytesDone, 100)
  t.equal(p.etaSeconds, 50)
  t.match(p.description, /1 of 2 parts done/)
})

t.test('success alone shows 100; unknown sizes weigh equally; grandchildren count', async t => {
  const all = rollUp(node({ state: 'started', children: [node({ state: 'success', progress: 100, bytesDone: 10, bytesTotal: 10 })] }))
  t.equal(all.progress, 99, 'children done but the parent not yet: 99')
  t.equal(rollUp(node({ state: 'success', children: [node({ state: 'success', progress: 100 })] })).progress, 100)
  t.equal(rollUp(node({ children: [node({ progress: 40 }), node({ progress: 80 })] })).progress, 60)
  const deep = rollUp(node({ children: [node({ children: [node({ bytesDone: 30, bytesTotal: 100 })] }), node({ bytesDone: 0, bytesTotal: 100 })] }))
  t.equal(deep.progress, 15)
  t.equal(rollUp(node({ state: 'error', progress: 40, etaSeconds: 9 })).etaSeconds, null, 'no eta once finished')
})
