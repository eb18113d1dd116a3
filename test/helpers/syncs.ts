// Records the fdatasync and fsync calls a test makes on some files, through FileHandle's prototype.
import { open, readlink } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

interface Teardown { teardown: (fn: () => Promise<void> | void) => void }

/**
 * Records 'datasync' (fdatasync) and 'fsync' for every call on a file `which` accepts (its path
 * read from /proc/self/fd), in the order the calls complete, until the test's teardown.
 */
export async function recordSyncs (t: Teardown, which: (file: string) => boolean): Promise<string[]> {
  const calls: string[] = []
  const probe = await open(fileURLToPath(import.meta.url), 'r')
  const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void>, sync: () => Promise<void> }
  await probe.close()
  const { datasync, sync } = proto
  const spy = (kind: string, original: () => Promise<void>) => async function (this: { fd: number }) {
    const file = await readlink(`/proc/self/fd/${this.fd}`).catch(() => '')
    await original.call(this)
    if (which(file)) calls.push(kind)
  }
  proto.datasync = spy('datasync', datasync)
  proto.sync = spy('fsync', sync)
  t.teardown(() => { proto.datasync = datasync; proto.sync = sync })
  return calls
}
