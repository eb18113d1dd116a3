// A multipart upload's commit while a batch of its job's log is still being written: the batch
// updates the job's row (its log tail), and the commit waits for it before recording the end. The
// commit must not lock that row first: the two would wait on each other until PostgreSQL's
// idle-transaction timeout (30 s) ended the commit, a 503 for an upload that was stored whole.
import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import pg from 'pg'
import t from 'tap'
import { transferDeps } from '../../src/features/transfers/service.ts'
import { startMultipartUpload } from '../../src/features/transfers/upload-multipart.ts'
import { buildTestApp, createUser } from '../helpers/app.ts'
import { MiB, sha256 } from './helpers.ts'

const { app, databaseUrl } = await buildTestApp(t, { runWorkers: false })

t.test('the commit records the upload while a log batch of its job waits for the drive row', async t => {
  const alice = await createUser(app)
  const bytes = randomBytes(2 * MiB)
  const upload = await startMultipartUpload(transferDeps(app), alice.id, { name: 'logged', media: 'disk' }, bytes.length)
  // receiving logs lines: their batch is written 200 ms later
  await upload.receive(Readable.from([bytes]), () => false)
  const other = new pg.Client({ connectionString: databaseUrl })
  await other.connect()
  t.teardown(() => other.end())
  // the drive row held elsewhere: the commit's transaction waits on it at its drive step, while the
  // log batch (due meanwhile) writes the job's row
  await other.query('BEGIN')
  await other.query('SELECT 1 FROM drives WHERE id = $1::uuid FOR UPDATE', [upload.driveId])
  const committing = upload.commit()
  committing.catch(() => {})
  await new Promise(resolve => setTimeout(resolve, 1000))
  await other.query('COMMIT')
  const released = Date.now()
  const done = await committing
  // not a speed check: the two waiting on each other ended only at the 30 s idle-transaction timeout
  t.ok(Date.now() - released < 15_000, `the commit went on once the drive row was free (${Date.now() - released} ms)`)
  t.equal(done.sha256, sha256(bytes), 'recorded, with the sha256 of the file')
  const job = await app.prisma.job.findUniqueOrThrow({ where: { id: upload.jobId } })
  t.equal(job.state, 'success')
  t.equal(Number(job.bytesTotal), bytes.length, 'bytes_total is the file\'s length')
  t.equal(Number(job.bytesDone), bytes.length, 'and so is bytes_done')
  t.ok((job.logTail ?? []).some(l => l.startsWith('stored 2.0 MiB')), `the log's lines were kept (${(job.logTail ?? []).join(' | ')})`)
})
