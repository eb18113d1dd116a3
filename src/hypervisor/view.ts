// What the hypervisor driver is told about a server, read from its row and mounts.
import type { PrismaClient, Tx } from '../db/client.ts'
import type { HypervisorServer } from './driver.ts'

export interface ServerView extends HypervisorServer {
  status: string
  lockedByJob: string | null
}

export async function hypervisorView (db: PrismaClient | Tx, id: string): Promise<ServerView | undefined> {
  const row = await db.server.findUnique({ where: { id }, include: { mounts: { orderBy: { position: 'asc' } } } })
  if (!row || row.deleted) return undefined
  return {
    id: row.id,
    ownerId: row.ownerId,
    name: row.name,
    cpu: row.cpu,
    mem: row.mem,
    smp: row.smp,
    vncPassword: row.vncPassword,
    status: row.status,
    lockedByJob: row.lockedByJob,
    drives: row.mounts.map(m => ({ driveId: m.driveId, device: m.device, devChannel: m.devChannel, bootOrder: m.bootOrder })),
    nics: ((row.nics ?? []) as Array<{ mac: string, model: string }>).map(n => ({ mac: n.mac, model: n.model }))
  }
}
