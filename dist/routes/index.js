import jobs from "./jobs.js";
import drives from "./drives.js";
import profile from "./profile.js";
import servers from "./servers.js";
import clones from "../services/clones.js";
import uploads from "./uploads.js";
import downloads from "./downloads.js";
const api = async (app) => {
    await app.register(jobs);
    await app.register(clones);
    await app.register(drives);
    await app.register(profile);
    await app.register(servers);
    await app.register(uploads);
    await app.register(downloads);
};
export default api;
//# sourceMappingURL=index.js.map