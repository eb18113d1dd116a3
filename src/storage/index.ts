import { LocalDriveStorage } from './local.ts'
import type { LocalDriveStorageOptions } from './local.ts'
import type { DriveStorage } from './types.ts'

export { LocalDriveStorage } from './local.ts'
export type { CopyMethod, LocalDriveStorageOptions } from './local.ts'
export { MAX_DRIVE_SIZE, StorageError, isStorageError } from './types.ts'
export type {
  CopyOptions,
  CopyProgress,
  DriveStat,
  DriveStorage,
  DriveWriter,
  ReadRange,
  StorageErrorCode,
  WriteStreamOptions,
} from './types.ts'

export type StorageOptions = LocalDriveStorageOptions

/**
 * The drive storage of this deployment. Only local files exist today; `root` is the
 * folder of the images (e.g. `./data/drives`), created on first use.
 */
export function createStorage (options: StorageOptions): DriveStorage {
  return new LocalDriveStorage(options)
}
