// Assertions on drive storage shared by the storage tests (test/storage) and the write-back
// failure tests (test-io).
import { existsSync } from 'node:fs'
import { readdir } from 'node:fs/promises'
import path from 'node:path'
import type { Test } from 'tap'
import { StorageError } from '../../src/storage/index.ts'
import type { DriveStorage, StorageErrorCode } from '../../src/storage/index.ts'

/** Asserts that `p` rejects with a StorageError of `code`; returns the error (undefined if it resolved). */
export async function expectCode (t: Test, p: Promise<unknown>, code: StorageErrorCode, msg: string): Promise<unknown> {
  try {
    await p
    t.fail(`${msg}: expected ${code}, resolved`)
    return undefined
  } catch (err) {
    t.ok(err instanceof StorageError, `${msg}: is StorageError (${String(err)})`)
    t.equal((err as StorageError).code, code, `${msg}: code ${code}`)
    return err
  }
}

/** No file of drive `id` (image or partial) in its shard folder. */
export async function noFilesOf (s: DriveStorage, id: string): Promise<boolean> {
  const dir = path.dirname(s.path(id))
  if (!existsSync(dir)) return true
  return !(await readdir(dir)).some(f => f.startsWith(id))
}
