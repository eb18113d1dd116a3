import { errorResponses, refTo } from "../schemas/common.js";
import { Profile, ProfileUpdate } from "../schemas/profile.js";
const profile = async (app) => {
    app.addSchema(Profile);
    const toWire = (a) => ({ uuid: a.id, email: a.email, resource_uri: '/api/2.0/profile/', clone_naming: a.cloneNaming });
    app.get('/profile/', {
        schema: { tags: ['accounts'], summary: 'The account profile', response: { 200: refTo(Profile), ...errorResponses() } }
    }, async (request) => {
        const account = await app.prisma.account.findUniqueOrThrow({ where: { id: request.account.id } });
        return toWire(account);
    });
    app.put('/profile/', {
        schema: { tags: ['accounts'], summary: 'Change the profile (clone_naming)', body: ProfileUpdate, response: { 200: refTo(Profile), ...errorResponses() } }
    }, async (request) => {
        const account = await app.prisma.account.update({
            where: { id: request.account.id },
            data: request.body.clone_naming ? { cloneNaming: request.body.clone_naming } : {}
        });
        // the auth cache holds the old value for a while; this request's account is updated now
        request.account.cloneNaming = account.cloneNaming;
        return toWire(account);
    });
};
export default profile;
//# sourceMappingURL=profile.js.map