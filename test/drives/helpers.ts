// Small helpers shared by the drive tests.
import { randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { client, eventually } from '../helpers/app.ts'

export type Api = ReturnType<typeof client>
export const GiB = 1024 ** 3

export async function createDrive (api: Api, body: Record<string, unknown> = {}): Promise<any> {
  const res = await api.post('/api/2.0/drives/', { name: 'disk', size: GiB, media: 'disk', ...body })
  if (res.statusCode !== 201) throw new Error(`create failed: ${res.statusCode} ${res.body}`)
  return res.json().objects[0]
}

/** Polls the drive until it shows `status`; returns it. */
export async function waitStatus (api: Api, uuid: string, status: string): Promise<any> {
  return eventually(async () => {
    const d = (await api.get(`/api/2.0/drives/${uuid}/`)).json()
    return d.status === status ? d : undefined
  })
}

/**
 * A created drive once its drive_create job has finished, as a client waits for it: the drive
 * shows its resting status a moment before the engine records the job's end (finishes are
 * batched), and until then the job still holds the drive (a write on it is 503 busy).
 */
export async function readyDrive (api: Api, body: Record<string, unknown> = {}): Promise<any> {
  const d = await createDrive(api, body)
  for (const job of d.jobs as Array<{ uuid: string }>) {
    await eventually(async () => (await api.get(`/api/2.0/jobs/${job.uuid}/?wait=5`)).json().state === 'success')
  }
  return waitStatus(api, d.uuid, 'unmounted')
}

export async function waitGone (api: Api, uuid: string): Promise<void> {
  await eventually(async () => (await api.get(`/api/2.0/drives/${uuid}/`)).statusCode === 404)
}

/** A server row with the drive attached (servers are another feature; only the tables matter here). */
export async function attachToServer (app: FastifyInstance, ownerId: string, driveId: string, status: 'running' | 'stopped'): Promise<string> {
  const id = randomUUID()
  await app.prisma.server.create({ data: { id, ownerId, name: 'srv', cpu: 1000, mem: BigInt(GiB), vncPassword: 'x', status } })
  await app.prisma.serverDrive.create({ data: { serverId: id, driveId, device: 'virtio', devChannel: '0:0' } })
  await app.prisma.drive.update({ where: { id: driveId }, data: { status: 'mounted' } })
  return id
}

/** Marks the drive's jobs finished, for tests that fake a state without running workers. */
export async function finishJobsOf (app: FastifyInstance, driveId: string): Promise<void> {
  await app.prisma.job.updateMany({ where: { links: { some: { resourceId: driveId } } }, data: { state: 'success', finishedAt: new Date() } })
}
