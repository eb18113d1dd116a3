// The account profile subset we keep: identity and clone naming (spec §2.10).
import { Type } from 'typebox';
import { CLONE_NAMING } from "../domain/naming.js";
export const Profile = Type.Object({
    uuid: Type.String(),
    email: Type.String(),
    resource_uri: Type.String(),
    clone_naming: Type.String({ enum: [...CLONE_NAMING], description: 'How clones are named when a clone request gives no name' })
}, { $id: 'Profile' });
export const ProfileUpdate = Type.Object({
    clone_naming: Type.Optional(Type.String({ enum: [...CLONE_NAMING] }))
}, { additionalProperties: false });
//# sourceMappingURL=profile.js.map