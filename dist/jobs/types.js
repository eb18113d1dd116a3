export const JOB_STATES = ['queued', 'started', 'cancelling', 'success', 'error', 'cancelled'];
export const FINISHED_STATES = ['success', 'error', 'cancelled'];
export const OPERATIONS = [
    'drive_create', 'drive_clone', 'drive_resize', 'drive_delete', 'drive_upload', 'drive_download',
    'server_clone', 'server_start', 'server_stop', 'server_delete'
];
/** Thrown by handlers for failures whose message is safe and useful to show to the client. */
export class JobFailure extends Error {
    errorType;
    constructor(message, errorType = 'backend') {
        super(message);
        this.errorType = errorType;
        this.name = 'JobFailure';
    }
}
//# sourceMappingURL=types.js.map