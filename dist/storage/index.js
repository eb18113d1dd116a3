import { LocalDriveStorage } from "./local.js";
export { LocalDriveStorage } from "./local.js";
export { MAX_DRIVE_SIZE, StorageError, isStorageError } from "./types.js";
/**
 * The drive storage of this deployment. Only local files exist today; `root` is the
 * folder of the images (e.g. `./data/drives`), created on first use.
 */
export function createStorage(options) {
    return new LocalDriveStorage(options);
}
//# sourceMappingURL=index.js.map