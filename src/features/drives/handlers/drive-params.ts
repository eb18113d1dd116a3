// Reading the params of the drive jobs, which the drives service wrote.
import type { JobContext } from '../../../engine/types.ts'
import { IncompleteParams } from '../../../engine/types.ts'

export interface DriveJobParams {
  driveId: string
  size: number
}

export function driveJobParams (ctx: JobContext, needsSize: boolean): DriveJobParams {
  const { driveId, size } = ctx.job.params as { driveId?: unknown, size?: unknown }
  if (typeof driveId !== 'string' || (needsSize && typeof size !== 'number')) {
    throw new IncompleteParams()
  }
  return { driveId, size: typeof size === 'number' ? size : 0 }
}
