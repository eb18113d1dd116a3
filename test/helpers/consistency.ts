// Half-made state after a failure or a burst: drives or servers in a transient status with no
// unfinished job holding them, and jobs holding nothing.
import type { PrismaClient } from '../../src/db/client.ts'

export async function halfMade (prisma: PrismaClient): Promise<string[]> {
  const drives = await prisma.$queryRaw<Array<{ id: string, status: string }>>`
    SELECT d.id, d.status FROM drives d LEFT JOIN jobs j ON j.id = d.locked_by_job
    WHERE NOT d.deleted AND d.status IN ('creating', 'resizing', 'cloning_dst', 'uploading')
      AND (j.id IS NULL OR j.state IN ('success', 'error', 'cancelled'))`
  const locked = await prisma.$queryRaw<Array<{ id: string, status: string }>>`
    SELECT d.id, d.status FROM drives d JOIN jobs j ON j.id = d.locked_by_job
    WHERE NOT d.deleted AND j.state IN ('success', 'error', 'cancelled')`
  return [...drives, ...locked].map(d => `drive ${d.id} is ${d.status} without an unfinished job`)
}
