// Every /api/2.0/ route, registered in one place.
import type { FastifyPluginAsync } from 'fastify'
import jobs from './jobs.ts'
import drives from './drives.ts'

const api: FastifyPluginAsync = async (app) => {
  await app.register(jobs)
  await app.register(drives)
}

export default api
