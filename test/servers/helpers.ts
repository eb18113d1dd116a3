// Drives for server tests, written straight to the database in a chosen status (the drives
// resource and its jobs are tested on their own).
import { randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'

export interface DriveSeed {
  media?: 'disk' | 'cdrom'
  status?: string
  allowMultimount?: boolean
  readers?: number
  name?: string
}

export async function seedDrive (app: FastifyInstance, ownerId: string, seed: DriveSeed = {}): Promise<string> {
  const id = randomUUID()
  await app.prisma.drive.create({
    data: {
      id,
      ownerId,
      name: seed.name ?? `drive-${id.slice(0, 8)}`,
      size: 1024n * 1024n,
      media: seed.media ?? 'disk',
      status: seed.status ?? 'unmounted',
      storageType: 'dssd',
      allowMultimount: seed.allowMultimount ?? false,
      readers: seed.readers ?? 0
    }
  })
  return id
}

export async function driveStatus (app: FastifyInstance, id: string): Promise<string | undefined> {
  return (await app.prisma.drive.findUnique({ where: { id } }))?.status
}

export const MINIMAL = { name: 'web', cpu: 1000, mem: 536870912, vnc_password: 'secret' }
