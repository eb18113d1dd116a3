// Job trees: parents wait for their children, roll their progress up, run a finalizer, and fail
// (cancelling the other children and cleaning up) when one child fails or is cancelled.
import t from 'tap'
import { enqueueJob } from '../../src/engine/enqueue.ts'
import { JobFailure, type JobHandler } from '../../src/engine/types.ts'
import { buildTestApp, client, createUser } from '../helpers/app.ts'
import { abortableSleep, sleep, startEngine, waitForJob } from '../helpers/jobs.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })
const alice = await createUser(app)
const api = client(app, alice)

const gates = new Map<string, () => void>()
const log: string[] = []
// drive_clone children: wait on a gate named in params, report bytes, fail when asked
const child: JobHandler = {
  async run (ctx) {
    const p = ctx.job.params as { name: string, size: number, fail?: boolean }
    ctx.progress({ bytesDone: p.size / 2, bytesTotal: p.size })
    await new Promise<void>((resolve, reject) => {
      gates.set(p.name, resolve)
      ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason), { once: true })
    })
    if (p.fail) throw new JobFailure(`${p.name} broke`)
    log.push(`done ${p.name}`)
  },
  async cleanup (ctx, reason) { log.push(`cleanup ${(ctx.job.params as { name: string }).name} ${reason.state}`) }
}
const parent: JobHandler = {
  async run (ctx) { log.push(`finalize ${ctx.job.id}`); return { finalized: true } },
  async cleanup (_ctx, reason) { log.push(`cleanup parent ${reason.state}`) }
}
await startEngine(t, app, { drive_clone: child, server_clone: parent, server_start: { async run (ctx) { await abortableSleep(60_000, ctx.signal) } } }, { databaseUrl, progressIntervalMs: 50 })

async function tree (children: Array<{ name: string, size: number, fail?: boolean }>) {
  return app.prisma.$transaction(async tx => {
    const root = await enqueueJob(tx, { ownerId: alice.id, operation: 'server_clone' })
    const kids = []
    for (const c of children) kids.push((await enqueueJob(tx, { ownerId: alice.id, operation: 'drive_clone', parentId: root.id, params: c, bytesTotal: c.size })).id)
    return { root: root.id, kids }
  })
}

async function openGate (name: string) {
  for (let i = 0; i < 200 && !gates.has(name); i++) await sleep(25)
  gates.get(name)!()
  gates.delete(name)
}

t.test('a parent is started while children run, rolls up bytes, then runs its finalizer', async t => {
  log.length = 0
  const { root, kids } = await tree([{ name: 'a', size: 1000 }, { name: 'b', size: 3000 }])
  await waitForJob(app, kids[0], { states: ['started'] })
  await waitForJob(app, kids[1], { states: ['started'] })
  let job: any
  for (let i = 0; i < 100; i++) {
    job = (await api.get(`/api/2.0/jobs/${root}/`)).json()
    if (job.data.bytes_done === 2000) break
    await sleep(50)
  }
  t.equal(job.state, 'started', 'the parent is started while its children run')
  t.equal(job.data.bytes_total, 4000, 'bytes_total is the sum of the children')
  t.equal(job.data.bytes_done, 2000)
  t.equal(job.data.progress, 50, 'byte-weighted roll-up')
  t.equal(job.children.length, 2, 'children are nested')
  t.same(job.children.map((c: any) => c.parent.uuid), [root, root])
  await openGate('a')
  await waitForJob(app, kids[0])
  job = (await api.get(`/api/2.0/jobs/${root}/`)).json()
  t.equal(job.data.progress, 62, '1000 + 1500 of 4000 bytes')
  t.equal(job.state, 'started')
  await openGate('b')
  const done = await waitForJob(app, root)
  t.equal(done.state, 'success')
  t.same(done.result, { finalized: true })
  t.same(log, ['done a', 'done b', `finalize ${root}`], 'the finalizer runs after all children')
  const list = (await api.get('/api/2.0/jobs/')).json()
  t.notOk(list.objects.some((o: any) => kids.includes(o.uuid)), 'children are not listed at the top level')
  t.equal((await api.get(`/api/2.0/jobs/?parent=${root}`)).json().meta.total_count, 2, 'but can be listed by parent')
})

t.test('one child failing cancels its siblings, cleans up and fails the parent', async t => {
  log.length = 0
  const { root, kids } = await tree([{ name: 'x', size: 10, fail: true }, { name: 'y', size: 10 }, { name: 'z', size: 10 }])
  await waitForJob(app, kids[1], { states: ['started'] })
  await openGate('x')
  const p = await waitForJob(app, root)
  t.equal(p.state, 'error')
  t.same(p.error, { error_type: 'backend', error_message: 'x broke' }, 'the parent carries the child\'s error')
  const states = await Promise.all(kids.map(id => app.prisma.job.findUniqueOrThrow({ where: { id } })))
  t.same(states.map(s => s.state), ['error', 'cancelled', 'cancelled'])
  t.ok(log.includes('cleanup y cancelled') && log.includes('cleanup z cancelled'), 'the siblings cleaned up')
  t.equal(log.at(-1), 'cleanup parent error', 'the parent cleans up last')
})

t.test('trees of any depth: grandchildren roll up and settle', async t => {
  log.length = 0
  const ids = await app.prisma.$transaction(async tx => {
    const root = await enqueueJob(tx, { ownerId: alice.id, operation: 'server_clone' })
    const mid = await enqueueJob(tx, { ownerId: alice.id, operation: 'server_clone', parentId: root.id })
    const leaf = await enqueueJob(tx, { ownerId: alice.id, operation: 'drive_clone', parentId: mid.id, params: { name: 'deep', size: 100 } })
    return { root: root.id, mid: mid.id, leaf: leaf.id }
  })
  const leaf = await app.prisma.job.findUniqueOrThrow({ where: { id: ids.leaf } })
  t.equal(leaf.rootId, ids.root, 'root_id is the top of the tree')
  await waitForJob(app, ids.leaf, { states: ['started'] })
  const mid = await waitForJob(app, ids.mid, { states: ['started'] })
  t.equal(mid.state, 'started', 'ancestors start with their first descendant')
  await openGate('deep')
  t.equal((await waitForJob(app, ids.root)).state, 'success')
  const job = (await api.get(`/api/2.0/jobs/${ids.root}/`)).json()
  t.equal(job.children[0].children[0].uuid, ids.leaf)
  t.equal(job.data.progress, 100)
  t.equal(job.data.bytes_done, 100)
})
