// The job wire object (spec §4 plus decisions.md: parent, started_at, finished_at, error).
import { Type, type Static } from 'typebox'
import { JOB_STATES, OPERATIONS } from '../jobs/types.ts'
import { Ref, refTo } from './common.ts'

export const JobData = Type.Object({
  progress: Type.Integer({ minimum: 0, maximum: 100, description: 'Percent done; 100 only on success' }),
  description: Type.Optional(Type.String({ description: 'A human line such as "copied 1.2 of 10 GiB"' })),
  bytes_done: Type.Optional(Type.Integer()),
  bytes_total: Type.Optional(Type.Integer()),
  eta_seconds: Type.Optional(Type.Integer())
}, { $id: 'JobData', additionalProperties: true })

export const JobError = Type.Object({
  error_type: Type.String(),
  error_message: Type.String()
}, { $id: 'JobError' })

const jobProperties = {
  uuid: Type.String(),
  resource_uri: Type.String(),
  operation: Type.String({ enum: [...OPERATIONS] }),
  state: Type.String({ enum: [...JOB_STATES] }),
  data: refTo(JobData),
  created: Type.String({ description: 'datetime' }),
  last_modified: Type.String({ description: 'datetime' }),
  started_at: Type.Union([Type.String({ description: 'datetime' }), Type.Null()]),
  finished_at: Type.Union([Type.String({ description: 'datetime' }), Type.Null()]),
  resources: Type.Array(Type.String(), { description: 'URIs of the drives and servers the job touches' }),
  parent: Type.Union([refTo(Ref), Type.Null()]),
  error: Type.Union([refTo(JobError), Type.Null()]),
  result: Type.Optional(Type.Unknown({ description: 'What the operation produced, e.g. the SHA-256 of an upload' }))
}

// Wire objects are Partial: `fields=` may leave any key out, and the serializer must allow that.
export const Job = Type.Partial(Type.Object({
  ...jobProperties,
  children: Type.Array(Type.Ref('Job'), { description: 'Full nested child jobs, recursively' })
}), { $id: 'Job', description: 'A job. Every field is present unless `fields=` leaves it out.' })

export type JobWire = Required<Omit<Static<typeof Job>, 'children' | 'result'>> & { result?: unknown, children: JobWire[] }
