// Settings, read once from the environment, with defaults that let `npm start` work unconfigured.
import path from 'node:path'

export const ROLES = ['all', 'api', 'worker'] as const
/** all: API and job workers; api: the API only, no job handlers; worker: job handlers and the probes only. */
export type Role = typeof ROLES[number]

export interface Config {
  role: Role
  host: string
  port: number
  /** PostgreSQL URL; when absent an embedded PostgreSQL is started under dataDir/pg. */
  databaseUrl: string | undefined
  dataDir: string
  drivesDir: string
  embeddedPgPort: number
  logLevel: string
  /** Largest accepted JSON body, in bytes. */
  bodyLimit: number
  /** Largest drive, in bytes (default 16 TiB). */
  driveMaxSize: number
  jobConcurrency: number
  jobLeaseSeconds: number
  jobRetentionDays: number
  purgeCron: string
  /** How often a worker process folds the jobs list's finished-job counters (seconds; the purge folds them too). */
  listFoldSeconds: number
  /** How often the sweeper retries the removal of images whose drive rows are gone (seconds). */
  imageSweepSeconds: number
  cloneParallelism: number
  uploadLinkTtlSeconds: number
  /**
   * Most bytes the request that records an upload's last chunk reads back from the image to finish
   * its sha256 (chunks that arrived out of order); past it the upload's job reads the image.
   */
  chunkReadBackMaxBytes: number
  downloadLinkTtlSeconds: number
  /** Whether a first start on an empty database creates an account and prints its password. */
  bootstrapAccount: boolean
  /** fsync drive images after creating, resizing and copying them (durable clones), at some speed cost. */
  storageFsync: boolean
  /** Connections in the database pool. */
  dbPoolMax: number
  /** How long a request waits for a pool connection before a 503 `concurrency`. */
  dbPoolWaitMs: number
  /** Longest wait for one query's answer before the request fails with 503 (a stalled database). */
  dbQueryTimeoutMs: number
  /** Requests waiting for a pool connection beyond which new requests are refused at once with 503. */
  dbPoolMaxWaiting: number
  /** Event-loop delay beyond which new requests are refused with 503 (0: no limit). */
  maxEventLoopDelayMs: number
  /** Heap use beyond which new requests are refused with 503 (0: no limit). */
  maxHeapUsedBytes: number
  /** A request body silent this long is ended (uploads are discarded). */
  bodyIdleTimeoutMs: number
  /** The whole request head must arrive within this time. */
  headersTimeoutMs: number
  /** An idle keep-alive connection is closed after this time. */
  keepAliveTimeoutMs: number
  /** Requests served on one connection before it is closed (0: no limit). */
  maxRequestsPerSocket: number
  /** Failed logins allowed per account, and per client address, in loginWindowMs. */
  loginFailuresPerAccount: number
  loginFailuresPerAddress: number
  loginWindowMs: number
  /** Password hashes computed at once; further logins queue. */
  passwordHashConcurrency: number
  /** Where drive images live: 'local' sparse files under drivesDir, or 'rbd' images on Ceph. */
  storage: 'local' | 'rbd'
  /** ceph.conf of the cluster (STORAGE=rbd); unset: the rbd CLI's default lookup. */
  cephConf: string | undefined
  /** RBD pool of the drive images. */
  rbdPool: string
  /** Ceph user (without `client.`) and keyring, when the cluster has auth on. */
  cephUser: string | undefined
  cephKeyring: string | undefined
  /** Seconds one Ceph OSD operation may wait before its call fails (CEPH_OP_TIMEOUT). */
  cephOpTimeoutSeconds: number
  /** How long the built-in recording hypervisor driver takes per power change, so starting/stopping show. */
  hypervisorDelayMs: number
  /** How long a stop lets in-flight requests finish before cutting them (under Docker's 10 s). */
  stopGraceMs: number
}

const TiB = 1024 ** 4

function int (env: NodeJS.ProcessEnv, name: string, fallback: number, min = 0): number {
  const raw = env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isSafeInteger(value) || value < min) {
    throw new Error(`setting ${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`)
  }
  return value
}

function bool (env: NodeJS.ProcessEnv, name: string, fallback: boolean): boolean {
  const raw = env[name]
  if (raw === undefined || raw === '') return fallback
  if (/^(1|true|yes|on)$/i.test(raw)) return true
  if (/^(0|false|no|off)$/i.test(raw)) return false
  throw new Error(`setting ${name} must be a boolean, got ${JSON.stringify(raw)}`)
}

function storageKind (raw: string | undefined): 'local' | 'rbd' {
  if (raw === undefined || raw === '' || raw === 'local') return 'local'
  if (raw === 'rbd') return 'rbd'
  throw new Error(`setting STORAGE must be local or rbd, got ${JSON.stringify(raw)}`)
}

export function loadConfig (env: NodeJS.ProcessEnv = process.env, overrides: Partial<Config> = {}): Config {
  const dataDir = path.resolve(env.DATA_DIR ?? './data')
  const role = env.ROLE || 'all'
  if (!(ROLES as readonly string[]).includes(role)) throw new Error(`setting ROLE must be one of ${ROLES.join(', ')}, got ${JSON.stringify(role)}`)
  const config: Config = {
    role: role as Role,
    host: env.HOST ?? '127.0.0.1',
    port: int(env, 'PORT', 3000),
    databaseUrl: env.DATABASE_URL || undefined,
    dataDir,
    drivesDir: path.resolve(env.DRIVES_DIR ?? path.join(dataDir, 'drives')),
    embeddedPgPort: int(env, 'EMBEDDED_PG_PORT', 54329, 1),
    logLevel: env.LOG_LEVEL ?? 'info',
    bodyLimit: int(env, 'BODY_LIMIT', 1024 * 1024, 1024),
    driveMaxSize: int(env, 'DRIVE_MAX_SIZE', 16 * TiB, 1),
    jobConcurrency: int(env, 'JOB_CONCURRENCY', 4, 1),
    jobLeaseSeconds: int(env, 'JOB_LEASE_SECONDS', 30, 1),
    jobRetentionDays: Number(env.JOB_RETENTION_DAYS ?? 3),
    purgeCron: env.PURGE_CRON ?? '*/10 * * * *',
    listFoldSeconds: int(env, 'LIST_FOLD_SECONDS', 60, 1),
    imageSweepSeconds: int(env, 'IMAGE_SWEEP_SECONDS', 30, 1),
    cloneParallelism: int(env, 'CLONE_PARALLELISM', 4, 1),
    uploadLinkTtlSeconds: int(env, 'UPLOAD_LINK_TTL', 300, 1),
    chunkReadBackMaxBytes: int(env, 'CHUNK_READ_BACK_MAX', 256 * 1024 * 1024, 0),
    downloadLinkTtlSeconds: int(env, 'DOWNLOAD_LINK_TTL', 60, 1),
    bootstrapAccount: bool(env, 'BOOTSTRAP_ACCOUNT', true),
    storageFsync: bool(env, 'STORAGE_FSYNC', true),
    hypervisorDelayMs: int(env, 'HYPERVISOR_DELAY_MS', 0),
    dbPoolMax: int(env, 'DB_POOL_MAX', 10, 1),
    dbPoolWaitMs: int(env, 'DB_POOL_WAIT_MS', 5000, 1),
    dbQueryTimeoutMs: int(env, 'DB_QUERY_TIMEOUT_MS', 30_000, 1),
    dbPoolMaxWaiting: int(env, 'DB_POOL_MAX_WAITING', 200, 1),
    maxEventLoopDelayMs: int(env, 'MAX_EVENT_LOOP_DELAY_MS', 2000),
    maxHeapUsedBytes: int(env, 'MAX_HEAP_USED_BYTES', 0),
    bodyIdleTimeoutMs: int(env, 'BODY_IDLE_TIMEOUT_MS', 30_000, 1),
    headersTimeoutMs: int(env, 'HEADERS_TIMEOUT_MS', 20_000, 1),
    keepAliveTimeoutMs: int(env, 'KEEP_ALIVE_TIMEOUT_MS', 5000, 1),
    maxRequestsPerSocket: int(env, 'MAX_REQUESTS_PER_SOCKET', 1000),
    loginFailuresPerAccount: int(env, 'LOGIN_FAILURES_PER_ACCOUNT', 10, 1),
    loginFailuresPerAddress: int(env, 'LOGIN_FAILURES_PER_ADDRESS', 30, 1),
    loginWindowMs: int(env, 'LOGIN_WINDOW_MS', 60_000, 1),
    passwordHashConcurrency: int(env, 'PASSWORD_HASH_CONCURRENCY', 2, 1),
    storage: storageKind(env.STORAGE),
    cephConf: env.CEPH_CONF || undefined,
    rbdPool: env.RBD_POOL || 'rbd',
    cephUser: env.CEPH_USER || undefined,
    cephKeyring: env.CEPH_KEYRING || undefined,
    cephOpTimeoutSeconds: int(env, 'CEPH_OP_TIMEOUT', 60, 1),
    stopGraceMs: int(env, 'STOP_GRACE_MS', 8000),
    ...overrides
  }
  if (config.jobLeaseSeconds > 30) throw new Error('setting JOB_LEASE_SECONDS must be at most 30')
  if (!(config.jobRetentionDays > 0)) throw new Error('setting JOB_RETENTION_DAYS must be a positive number')
  return config
}
