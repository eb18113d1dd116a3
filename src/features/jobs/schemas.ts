// The job wire object (spec §4 plus decisions.md: parent, started_at, finished_at, error).
import { Type, type Static } from 'typebox'
import { JOB_STATES, OPERATIONS } from '../../engine/types.ts'
import { FIELDS_DESCRIPTION, ListMeta, Ref, refTo } from '../../http/schemas.ts'

export const JobData = Type.Object({
  progress: Type.Integer({ minimum: 0, maximum: 100, description: 'Percent done; 100 only on success' }),
  description: Type.Optional(Type.String({ description: 'A human line such as "copied 1.2 of 10 GiB"' })),
  bytes_done: Type.Optional(Type.Integer()),
  bytes_total: Type.Optional(Type.Integer()),
  eta_seconds: Type.Optional(Type.Integer()),
  extra: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: 'Handler-specific progress detail (TrueNAS\'s progress.extra), e.g. {"method": "cp --sparse=auto --reflink=auto", "phase": "copy"}' })),
  log_excerpt: Type.Optional(Type.Array(Type.String(), { description: 'The last few lines of the job\'s log (GET /jobs/{uuid}/log/ has all of it)' }))
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

/** The keys `fields=` may keep. */
export const JOB_FIELDS: readonly string[] = [...Object.keys(jobProperties), 'children']

export type JobWire = Required<Omit<Static<typeof Job>, 'children' | 'result'>> & { result?: unknown, children: JobWire[] }

/** The jobs list envelope: the common meta plus a keyset cursor for the next page. */
export const JobListMeta = Type.Object({
  ...ListMeta.properties,
  total_count: Type.Integer({ description: 'Number of jobs matching the filters, before paging. Without filters (the account\'s top-level jobs), always exact. With filters: exact up to 10,000, otherwise the database\'s estimate (then total_count_estimated is true); with cursor paging, exact up to 10,000 and otherwise 10,000 (at least that many). A filtered list of an account with more than 100,000 top-level jobs is counted among the newest 100,000 (by last_modified) only, so its total_count is an estimate (at least the matches counted there), flagged with total_count_estimated' }),
  total_count_estimated: Type.Optional(Type.Literal(true, { description: 'Present (true) only when total_count is an estimate, not an exact count: more than 10,000 jobs match a filter (offset paging), or a filtered list of more than 100,000 top-level jobs' })),
  next_cursor: Type.Optional(Type.Union([Type.String(), Type.Null()], { description: 'With `cursor=` (empty on the first page): pass as `cursor=` for the next page (keyset paging, fast at any depth); null on the last page' }))
}, { $id: 'JobListMeta' })

export const JobList = Type.Object({ meta: refTo(JobListMeta), objects: Type.Array(refTo(Job)) }, { $id: 'JobList' })

export const JobListQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 0, maximum: 2147483647, description: 'Page size; 0 returns all objects (default 20)' })),
  offset: Type.Optional(Type.Integer({ minimum: 0, maximum: 2147483647 })),
  cursor: Type.Optional(Type.String({ description: 'Keyset paging: empty for the first page, then the next_cursor of the previous page; replaces offset' })),
  order_by: Type.Optional(Type.String({ description: 'Comma-separated fields, `-` prefix for descending (default -last_modified)' })),
  fields: Type.Optional(Type.String({ description: FIELDS_DESCRIPTION })),
  format: Type.Optional(Type.String())
}, { additionalProperties: true })

export const JobGetQuery = Type.Object({
  fields: Type.Optional(Type.String({ description: FIELDS_DESCRIPTION })),
  wait: Type.Optional(Type.Integer({ minimum: 0, maximum: 60, description: 'Answer as soon as the job is finished, or after this many seconds' }))
})

export const JobLogQuery = Type.Object({
  follow: Type.Optional(Type.String({ enum: ['0', '1', 'true', 'false'], description: '1: keep the answer open and stream new lines until the job finishes' }))
})

export const JobActionQuery = Type.Object({
  do: Type.String({ enum: ['cancel'], description: 'cancel: cancel the job and its children' })
})

export const JobEventsQuery = Type.Object({
  job: Type.Optional(Type.String({ format: 'uuid', description: 'Only frames of this job' })),
  last_event_id: Type.Optional(Type.String({ pattern: '^[0-9]+$', description: 'Same as the Last-Event-ID header' }))
})
