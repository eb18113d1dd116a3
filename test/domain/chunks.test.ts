// Chunk geometry (§5.2): the last chunk is the larger one; a small file is one chunk.
import t from 'tap'
import { chunkCount, chunkRange, missingChunks } from '../../src/domain/chunks.ts'

const MiB = 1024 * 1024

t.test('a size below the chunk size is one chunk 0 holding everything', async t => {
  t.equal(chunkCount(1000, MiB), 1)
  t.same(chunkRange(1000, MiB, 0), { start: 0, length: 1000 })
  t.equal(chunkRange(1000, MiB, 1), undefined)
})

t.test('an exact multiple has equal chunks', async t => {
  t.equal(chunkCount(4 * MiB, MiB), 4)
  for (let i = 0; i < 4; i++) t.same(chunkRange(4 * MiB, MiB, i), { start: i * MiB, length: MiB })
  t.equal(chunkRange(4 * MiB, MiB, 4), undefined)
})

t.test('the last chunk holds the rest: between S and 2S-1 bytes', async t => {
  const size = 10 * MiB + 1023 // like pycloudsigma's test files
  const S = 5 * MiB
  t.equal(chunkCount(size, S), 2)
  t.same(chunkRange(size, S, 0), { start: 0, length: S })
  t.same(chunkRange(size, S, 1), { start: S, length: 5 * MiB + 1023 })
  const odd = 2 * S - 1
  t.equal(chunkCount(odd, S), 1, 'S..2S-1 bytes is one chunk')
  t.same(chunkRange(odd, S, 0), { start: 0, length: odd })
})

t.test('the chunks cover the image exactly, without overlap', async t => {
  for (const [size, S] of [[1, 1], [7, 3], [123457, 1000], [10 * MiB + 5, MiB]]) {
    let next = 0
    for (let i = 0; i < chunkCount(size, S); i++) {
      const r = chunkRange(size, S, i)!
      t.equal(r.start, next)
      next += r.length
    }
    t.equal(next, size, `${size}/${S} covered`)
  }
})

t.test('missing chunks, and bad input', async t => {
  t.same(missingChunks(10, 3, [0, 2]), [1])
  t.same(missingChunks(10, 3, [0, 1, 2]), [])
  t.same(missingChunks(10, 3, []), [0, 1, 2])
  t.equal(chunkRange(10, 3, -1), undefined)
  t.equal(chunkRange(10, 3, 1.5), undefined)
  t.throws(() => chunkCount(0, 3), RangeError)
  t.throws(() => chunkCount(10, 0), RangeError)
})
