// The pure drive status rules (§2.2): operations per status, display status, resting status.
import t from 'tap'
import {
  DRIVE_STATUSES, badMetaKey, canOperate, displayStatus, editableFields, isServerActive, restingStatus, runtimeFlags
} from '../../src/domain/drive-status.ts'

t.test('a resting drive read by clone jobs shows cloning_src', async t => {
  t.equal(displayStatus('unmounted', 0), 'unmounted')
  t.equal(displayStatus('unmounted', 2), 'cloning_src')
  t.equal(displayStatus('mounted', 1), 'cloning_src')
  t.equal(displayStatus('resizing', 1), 'resizing', 'transient statuses are shown as they are')
  t.ok(DRIVE_STATUSES.includes('cloning_src'))
  t.ok(DRIVE_STATUSES.includes('uploading'))
})

t.test('transient statuses are busy for everything but edits', async t => {
  for (const status of ['creating', 'resizing', 'cloning_dst', 'uploading']) {
    for (const op of ['resize', 'delete', 'clone', 'download', 'upload', 'mount'] as const) {
      t.equal(canOperate(op, status), 'busy', `${op} while ${status}`)
    }
    t.equal(canOperate('edit', status), 'ok', `edit while ${status}`)
  }
})

t.test('resting drives allow every operation', async t => {
  for (const status of ['unmounted', 'mounted']) {
    for (const op of ['edit', 'resize', 'delete', 'clone', 'download', 'upload', 'mount'] as const) {
      t.equal(canOperate(op, status, 0), 'ok', `${op} while ${status}`)
    }
  }
})

t.test('a clone source may be read again but not changed', async t => {
  t.equal(canOperate('clone', 'unmounted', 1), 'ok', 'several clones of one source')
  t.equal(canOperate('download', 'mounted', 3), 'ok')
  t.equal(canOperate('resize', 'unmounted', 1), 'busy')
  t.equal(canOperate('delete', 'unmounted', 1), 'busy')
  t.equal(canOperate('upload', 'unmounted', 1), 'busy')
})

t.test('an unavailable drive can only be deleted; unknown statuses are wrong', async t => {
  t.equal(canOperate('delete', 'unavailable'), 'ok')
  t.equal(canOperate('resize', 'unavailable'), 'wrong_state')
  t.equal(canOperate('clone', 'unavailable'), 'wrong_state')
  t.equal(canOperate('resize', 'melted'), 'wrong_state')
})

t.test('the resting status follows the mounts', async t => {
  t.equal(restingStatus(0), 'unmounted')
  t.equal(restingStatus(2), 'mounted')
})

t.test('servers that use their drives', async t => {
  t.ok(isServerActive('running'))
  t.ok(isServerActive('starting'))
  t.ok(isServerActive('stopping'))
  t.notOk(isServerActive('stopped'))
})

t.test('a drive on a running server only takes name, meta, tags and allow_multimount', async t => {
  t.same([...editableFields(true)].sort(), ['allow_multimount', 'meta', 'name', 'tags'])
  t.ok(editableFields(false).includes('size'))
  t.ok(editableFields(false).includes('media'))
  t.notOk(editableFields(false).includes('storage_type'), 'storage_type is never editable')
})

t.test('runtime flags', async t => {
  t.same(runtimeFlags('dssd', 'creating'), { is_downloadable: true, is_ephemeral: false, is_snapshotable: null })
  t.same(runtimeFlags('dssd', 'unmounted'), { is_downloadable: true, is_ephemeral: false, is_snapshotable: true })
  t.same(runtimeFlags('local_nvme', 'unmounted'), { is_downloadable: false, is_ephemeral: true, is_snapshotable: false })
})

t.test('meta keys are 1 to 32 characters', async t => {
  t.equal(badMetaKey({ a: '1', ['k'.repeat(32)]: 'x' }), undefined)
  t.equal(badMetaKey({ ['k'.repeat(33)]: 'x' }), 'k'.repeat(33))
  t.equal(badMetaKey({ '': 'x' }), '')
})
