// The storage contract on local sparse files (the rbd run is test/rbd/storage.rbd.ts).
import path from 'node:path'
import t from 'tap'
import { createStorage } from '../../src/storage/index.ts'
import { storageContract } from './contract.ts'

storageContract(t, t => createStorage({ root: path.join(t.testdir(), 'drives'), durable: false }))

t.test('local files are on the one host of this deployment', async t => {
  t.equal(await createStorage({ root: path.join(t.testdir(), 'drives') }).placement(), 'one-host')
})
