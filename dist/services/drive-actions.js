// The registry behind POST /drives/{uuid}/action/?do=<name>. Each action registers itself once,
// at the top level of its module (resize in routes/drives.ts; clone, upload_chunk, download in
// theirs), so the dispatcher never needs editing:
//
//   registerDriveAction('clone', { summary: 'Clone the drive', body: refTo(DriveCloneInput), run: async (ctx) => ... })
import { ActionRegistry } from "../http/actions.js";
export const driveActions = new ActionRegistry('drive');
export function registerDriveAction(name, action) {
    driveActions.register(name, action);
}
//# sourceMappingURL=drive-actions.js.map