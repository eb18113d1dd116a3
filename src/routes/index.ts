// Every /api/2.0/ route, registered in one place.
import type { FastifyPluginAsync } from 'fastify'
import jobs from './jobs.ts'
import drives from './drives.ts'
import profile from './profile.ts'
import servers from './servers.ts'

const api: FastifyPluginAsync = async (app) => {
  await app.register(jobs)
  await app.register(drives)
  await app.register(profile)
  await app.register(servers)
}

export default api
