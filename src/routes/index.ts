// Every /api/2.0/ route, registered in one place.
import type { FastifyPluginAsync } from 'fastify'
import jobs from './jobs.ts'
import drives from './drives.ts'
import profile from './profile.ts'
import servers from './servers.ts'
import clones from '../services/clones.ts'
import uploads from './uploads.ts'
import downloads from './downloads.ts'

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
