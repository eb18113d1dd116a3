// Drive storage as a service: `app.storage` holds the images under config.drivesDir.
import fp from 'fastify-plugin'
import { createStorage, type DriveStorage } from '../storage/index.ts'

declare module 'fastify' {
  interface FastifyInstance {
    storage: DriveStorage
  }
}

export default fp(async (app) => {
  app.decorate('storage', createStorage({ root: app.config.drivesDir, durable: app.config.storageFsync }))
}, { name: 'storage' })
