// Seeded fuzzing of every operation in openapi/openapi.json: mutated paths, query strings, bodies
// and headers. No answer may be a 5xx (a 503 `concurrency`/`database` excepted), and every 4xx is
// a CloudSigma error array. Reproduce a run with FUZZ_SEED=<seed printed below>.
import fs from 'node:fs'
import { randomUUID } from 'node:crypto'
import t from 'tap'
import { buildTestApp, client, createUser } from '../helpers/app.ts'

const SEED = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31))
const REQUESTS = Number(process.env.FUZZ_REQUESTS ?? 400)
t.comment(`fuzz seed ${SEED} (FUZZ_SEED=${SEED} to repeat), ${REQUESTS} requests`)

// mulberry32: small, deterministic, good enough for choosing mutations
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}
const rand = prng(SEED)
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]
const chance = (p: number) => rand() < p

const doc = JSON.parse(fs.readFileSync(new URL('../../openapi/openapi.json', import.meta.url), 'utf8')) as {
  paths: Record<string, Record<string, { parameters?: Array<{ name: string, in: string }>, requestBody?: { content: Record<string, unknown> }, responses?: Record<string, { content?: Record<string, unknown> }> }>>
}
interface Op { method: string, path: string, query: string[], body: string | undefined }
const ops: Op[] = []
for (const [path, item] of Object.entries(doc.paths)) {
  for (const [method, op] of Object.entries(item)) {
    if (!['get', 'post', 'put', 'delete'].includes(method)) continue
    // event streams never end; they are tested elsewhere
    if (Object.values(op.responses ?? {}).some(r => r.content && 'text/event-stream' in r.content)) continue
    ops.push({
      method: method.toUpperCase(),
      path,
      query: (op.parameters ?? []).filter(p => p.in === 'query' && p.name !== 'wait').map(p => p.name),
      body: op.requestBody ? Object.keys(op.requestBody.content)[0] : undefined
    })
  }
}

const NASTY_STRINGS = ['', '0', '-1', '1.5', '1e21', '1e308', 'Infinity', '-Infinity', 'NaN', '9223372036854775808', '2147483648', '9007199254740993',
  '\u0000', 'a\u0000b', 'a\ud800', '\udfff', '%', '%ZZ', '%C0%AF', 'constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf',
  '+275760-09-13T00:00:00Z', '99999', '-000001-01-01T00:00:00Z', '-last_modified', 'name,-name', 'x'.repeat(300), '💥', '[]', '{}', 'null',
  'true', 'not-a-uuid', ',', '\\', '\\,', 'disk', 'cdrom', 'start', 'clone', 'upload_chunk', 'stop', 'cancel', '/api/2.0/drives/x/']
const NASTY_VALUES: unknown[] = [...NASTY_STRINGS, 0, -1, 1.5, 2 ** 31, 2 ** 53, 2 ** 63, 1e308, -1e308, null, true, false, [], {}, [null], { __proto__: { x: 1 } },
  { constructor: 'x' }, { a: { b: { c: [1, 2, { d: '\u0000' }] } } }, Array.from({ length: 50 }, (_, i) => i)]
const FIELDS = ['name', 'size', 'media', 'meta', 'tags', 'iops', 'affinities', 'storage_type', 'allow_multimount', 'cpu', 'mem', 'smp', 'vnc_password',
  'drives', 'boot_order', 'dev_channel', 'device', 'drive', 'chunk_number', 'chunk_size', 'clone_naming', 'objects', 'uuid', 'status', 'constructor', '__proto__']

function encode (s: string): string {
  try {
    return encodeURIComponent(s)
  } catch {
    // lone surrogates cannot be encoded as UTF-8: send the bytes of one anyway
    return s.replace(/[\ud800-\udfff]/g, '%ED%A0%80').split('%ED%A0%80').map(p => encodeURIComponent(p)).join('%ED%A0%80')
  }
}

const { app } = await buildTestApp(t, { runWorkers: false })
const user = await createUser(app)
const api = client(app, user)
const drive = (await api.post('/api/2.0/drives/', { name: 'fuzz', size: 1024 * 1024, media: 'disk' })).json().objects[0].uuid as string
const server = (await api.post('/api/2.0/servers/', { name: 'fuzz', cpu: 1000, mem: 512 * 1024 * 1024, vnc_password: 'secret' })).json().objects[0].uuid as string

function mutatePath (path: string): string {
  let p = path
    .replace(/\{uuid\}/g, () => pick([drive, server, randomUUID(), encode(pick(NASTY_STRINGS)) || 'x']))
    .replace(/\{token\}/g, () => encode(pick(['A'.repeat(43), ...NASTY_STRINGS])) || 'x')
    .replace(/\{name\}/g, () => encode(pick(['img', ...NASTY_STRINGS])) || 'x')
  if (chance(0.1)) p = p.replace('/api/', pick(['/%61pi/', '/API/', '//api/', '/api/./']))
  if (chance(0.05)) p = p.replace(/\/$/, pick(['', '//', '/.', '%2F', '/%00']))
  if (chance(0.05)) p += pick(['x/', '%ZZ/', '..%2F', '%C0%AF'])
  return p
}

function mutateQuery (op: Op): string {
  const parts: string[] = []
  for (const name of op.query) if (chance(0.4)) parts.push(`${name}=${encode(pick(NASTY_STRINGS))}`)
  if (chance(0.3)) parts.push(`${encode(pick([...NASTY_STRINGS, 'name', 'status', 'created__gte', 'last_modified__lt', 'uuid', 'tag', 'name__contains']))}=${encode(pick(NASTY_STRINGS))}`)
  if (chance(0.1)) parts.push(`${encode(pick(NASTY_STRINGS))}__lt=${encode(pick(NASTY_STRINGS))}`)
  if (op.query.includes('do') && chance(0.5)) parts.push(`do=${pick(['clone', 'start', 'stop', 'resize', 'upload_chunk', 'cancel', 'download', 'authenticate_asynchronous', 'open_vnc'])}`)
  return parts.length > 0 ? '?' + parts.join('&') : ''
}

function mutateBody (op: Op): { payload: string | undefined, type: string | undefined } {
  if (!op.body || chance(0.1)) return { payload: chance(0.5) ? undefined : pick(['', '{', 'null', '[]', '\u0000', '{"a":']), type: pick(['application/json', undefined, 'text/plain']) }
  if (op.body === 'application/octet-stream') return { payload: 'x'.repeat(Math.floor(rand() * 64)), type: pick(['application/octet-stream', 'application/json', 'multipart/form-data; boundary=x']) }
  const obj: Record<string, unknown> = {}
  const base: Record<string, unknown> = { name: 'f', size: 1024 * 1024, media: 'disk', cpu: 1000, mem: 512 * 1024 * 1024, vnc_password: 'x', chunk_number: 0, chunk_size: 1024 }
  for (const [k, v] of Object.entries(base)) if (chance(0.6)) obj[k] = v
  for (let i = Math.floor(rand() * 4); i > 0; i--) obj[pick(FIELDS)] = pick(NASTY_VALUES)
  const wrapped = pick([obj, [obj], { objects: [obj] }, { objects: pick(NASTY_VALUES) }])
  return { payload: JSON.stringify(wrapped), type: 'application/json' }
}

function mutateHeaders (): Record<string, string> {
  const h: Record<string, string> = { authorization: user.authorization }
  if (chance(0.05)) h.authorization = pick(['', 'Basic', 'Basic !!!', 'Bearer x', 'Basic ' + Buffer.from('a\u0000b@x:y').toString('base64'), 'Basic ' + Buffer.from('nobody@x:y').toString('base64')])
  if (chance(0.1)) h.accept = pick(['text/html', '*/*', 'application/json;q=0', '\u00ff', 'application/octet-stream'])
  if (chance(0.1)) h['x-request-id'] = pick(['x'.repeat(500), 'a b', '../../etc'])
  return h
}

function isErrorArray (body: unknown): boolean {
  return Array.isArray(body) && body.length > 0 && body.every(e => e !== null && typeof e === 'object' && typeof e.error_type === 'string' && typeof e.error_message === 'string' && 'error_point' in e)
}

t.test('no 5xx, and 4xx answers are CloudSigma arrays', async t => {
  const failures: string[] = []
  for (let i = 0; i < REQUESTS; i++) {
    const op = pick(ops)
    const url = mutatePath(op.path) + mutateQuery(op)
    const { payload, type } = mutateBody(op)
    const headers = mutateHeaders()
    if (type) headers['content-type'] = type
    const what = `#${i} ${op.method} ${url.slice(0, 120)} ${payload?.slice(0, 80) ?? ''}`
    const res = await app.inject({ method: op.method as 'GET', url, headers, ...(payload !== undefined && op.method !== 'GET' ? { payload } : {}) })
    let body: unknown
    try { body = JSON.parse(res.body) } catch { body = undefined }
    const overloaded = res.statusCode === 503 && isErrorArray(body) && ['concurrency', 'database'].includes((body as Array<{ error_type: string }>)[0].error_type)
    if (res.statusCode >= 500 && !overloaded) failures.push(`${what} -> ${res.statusCode} ${res.body.slice(0, 200)}`)
    else if (res.statusCode >= 400 && !isErrorArray(body)) failures.push(`${what} -> ${res.statusCode} not an error array: ${res.body.slice(0, 200)}`)
  }
  t.same(failures, [], `seed ${SEED}: every answer well-formed`)
})
