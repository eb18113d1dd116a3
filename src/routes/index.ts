// Every /api/2.0/ route, registered in one place.
import type { FastifyPluginAsync } from 'fastify'
import jobs from '../features/jobs/routes.ts'
import drives from '../features/drives/routes.ts'
import profile from '../features/accounts/routes.ts'
import servers from '../features/servers/routes.ts'
import clones from '../features/clones/service.ts'
import uploads from '../features/transfers/uploads.ts'
import downloads from '../features/transfers/downloads.ts'

const api: FastifyPluginAsync = async (app) => {
  await app.register(jobs)
  await app.register(clones)
  await app.register(drives)
  await app.register(profile)
  await app.register(servers)
  await app.register(uploads)
  await app.register(downloads)
}

export default api
