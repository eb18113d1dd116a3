/** Largest drive size accepted: 16 TiB. */
export const MAX_DRIVE_SIZE = 16 * 1024 ** 4;
export class StorageError extends Error {
    code;
    constructor(code, message, options) {
        super(message, options);
        this.code = code;
        // An aborted operation looks like any other AbortError to generic code
        // (`err.name === 'AbortError'`) while staying an instance of StorageError.
        this.name = code === 'ABORTED' ? 'AbortError' : 'StorageError';
    }
}
export function isStorageError(err, code) {
    return err instanceof StorageError && (code === undefined || err.code === code);
}
//# sourceMappingURL=types.js.map