// Drive storage as a service: `app.storage` holds the images (config.drivesDir, or Ceph RBD with STORAGE=rbd).
import fp from 'fastify-plugin'
import { createStorage, type DriveStorage } from '../storage/index.ts'

declare module 'fastify' {
  interface FastifyInstance {
    storage: DriveStorage
  }
}

export default fp(async (app) => {
  const c = app.config
  app.decorate('storage', c.storage === 'rbd'
    ? createStorage({ backend: 'rbd', pool: c.rbdPool, conf: c.cephConf, user: c.cephUser, keyring: c.cephKeyring, opTimeoutSeconds: c.cephOpTimeoutSeconds })
    : createStorage({ root: c.drivesDir, durable: c.storageFsync }))
  // after the engine has handed its jobs back (preClose) and the transfers have drained: a storage
  // call still running (an rbd process waiting on a stalled cluster) must not hold the process
  app.addHook('onClose', async () => { await app.storage.close?.() })
}, { name: 'storage' })
