// Drive storage as a service: `app.storage` holds the images under config.drivesDir.
import fp from 'fastify-plugin';
import { createStorage } from "../storage/index.js";
export default fp(async (app) => {
    app.decorate('storage', createStorage({ root: app.config.drivesDir, durable: app.config.storageFsync }));
}, { name: 'storage' });
//# sourceMappingURL=storage.js.map