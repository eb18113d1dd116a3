import { LocalDriveStorage } from './local.ts'
import type { LocalDriveStorageOptions } from './local.ts'
import { RbdDriveStorage } from './rbd.ts'
import type { RbdDriveStorageOptions } from './rbd.ts'
import type { DriveStorage } from './types.ts'

export { gatheringWritable } from './gather.ts'
export type { GatheringSink } from './gather.ts'
export { LocalDriveStorage } from './local.ts'
export type { CopyMethod, LocalDriveStorageOptions } from './local.ts'
export { RbdDriveStorage } from './rbd.ts'
export type { RbdDriveStorageOptions } from './rbd.ts'
export { MAX_DRIVE_SIZE, StorageError, isStorageError } from './types.ts'
export type {
  CopyOptions,
  CopyProgress,
  CopyStats,
  CowCloneOptions,
  FlattenOptions,
  DrivePlacement,
  DriveReader,
  DriveStat,
  DriveStorage,
  DriveWriter,
  ReadRange,
  StorageErrorCode,
  StorageGuard,
  WriteStreamOptions,
  WrittenHook,
} from './types.ts'

export type StorageOptions = LocalDriveStorageOptions | ({ backend: 'rbd' } & RbdDriveStorageOptions)

/**
 * The drive storage of this deployment: local sparse files under `root` (created on first use,
 * the default), or Ceph RBD images in a pool (`backend: 'rbd'`).
 */
export function createStorage (options: StorageOptions): DriveStorage {
  if ('backend' in options) return new RbdDriveStorage(options)
  return new LocalDriveStorage(options)
}
