// /api/2.0/jobs/: list, detail, one job with nested children, schema.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { errors } from '../http/errors.ts'
import { envelope, pickFields, planList, parseFields } from '../http/listing.ts'
import { describeResource } from '../http/resource-schema.ts'
import type { FilterSpec, OrderSpec } from '../domain/filters.ts'
import { JOB_STATES, OPERATIONS } from '../jobs/types.ts'
import { ListQuery, UuidParams, errorResponses, listOf, refTo } from '../schemas/common.ts'
import { Job, JobData, JobError } from '../schemas/job.ts'
import { buildTree, jobToWire } from '../services/jobs-view.ts'

export const jobFilters: FilterSpec = {
  state: { column: 'state', kind: 'string', choices: JOB_STATES },
  operation: { column: 'operation', kind: 'string', choices: OPERATIONS },
  uuid: { column: 'id', kind: 'uuid' },
  parent: { column: 'parentId', kind: 'uuid' },
  resource: { column: 'links', kind: 'uuid', build: (v) => ({ links: { some: { resourceId: v.toLowerCase() } } }) },
  created: { column: 'created', kind: 'date' },
  last_modified: { column: 'lastModified', kind: 'date' },
  finished_at: { column: 'finishedAt', kind: 'date' }
}

export const jobOrder: OrderSpec = {
  fields: { last_modified: 'lastModified', created: 'created', state: 'state', operation: 'operation', uuid: 'id' },
  default: '-last_modified'
}

const JobList = listOf(refTo(Job), 'JobList')

const jobs: FastifyPluginAsyncTypebox = async (app) => {
  for (const s of [JobData, JobError, Job, JobList]) app.addSchema(s)

  const list = async (query: Record<string, unknown>, ownerId: string) => {
    const plan = planList(query, jobFilters, jobOrder)
    // top-level jobs only unless the caller filters by parent
    const where = { ...plan.where, ownerId, ...(query.parent === undefined ? { parentId: null } : {}) }
    const [total, rows] = await Promise.all([
      app.prisma.job.count({ where }),
      app.prisma.job.findMany({ where, orderBy: plan.orderBy, skip: plan.offset, take: plan.take })
    ])
    const trees = await app.prisma.job.findMany({ where: { rootId: { in: rows.map(r => r.id) }, NOT: { id: { in: rows.map(r => r.id) } } } })
    const objects = rows.map(r => buildTree([r, ...trees.filter(c => c.rootId === r.id || c.rootId === r.rootId)], r.id) ?? jobToWire(r))
    return envelope(plan, total, objects)
  }

  const listSchema = (summary: string) => ({
    tags: ['jobs'],
    summary,
    querystring: ListQuery,
    response: { 200: refTo(JobList), ...errorResponses() }
  })

  app.get('/jobs/', { schema: listSchema('List jobs') }, async (request) => list(request.query, request.account.id))
  app.get('/jobs/detail/', { schema: listSchema('List jobs with all fields') }, async (request) => list(request.query, request.account.id))

  app.get('/jobs/schema/', { schema: { tags: ['jobs'], summary: 'The job resource schema' } }, async () => describeResource(Job, {
    readonly: Object.keys(Job.properties),
    required: [],
    filtering: { state: 1, operation: 1, resource: 1, parent: 1, created: 1, last_modified: 1 },
    ordering: ['-last_modified'],
    detailMethods: ['get'],
    listMethods: ['get']
  }))

  app.get('/jobs/:uuid/', {
    schema: {
      tags: ['jobs'],
      summary: 'One job with its children',
      params: UuidParams,
      querystring: Type.Object({ fields: Type.Optional(Type.String()) }),
      response: { 200: refTo(Job), ...errorResponses(404) }
    }
  }, async (request) => {
    const row = await app.prisma.job.findFirst({ where: { id: request.params.uuid, ownerId: request.account.id } })
    if (!row) throw errors.notFound('Job', 'uuid')
    const tree = await app.prisma.job.findMany({ where: { rootId: row.rootId } })
    return pickFields(buildTree(tree, row.id)!, parseFields(request.query.fields)) as never
  })
}

export default jobs
