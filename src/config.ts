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
  cloneParallelism: number
  uploadLinkTtlSeconds: number
  downloadLinkTtlSeconds: number
  /** Whether a first start on an empty database creates an account and prints its password. */
  bootstrapAccount: boolean
  /** fsync drive images after creating, resizing and copying them (durable clones), at some speed cost. */
  storageFsync: boolean
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
    cloneParallelism: int(env, 'CLONE_PARALLELISM', 4, 1),
    uploadLinkTtlSeconds: int(env, 'UPLOAD_LINK_TTL', 300, 1),
    downloadLinkTtlSeconds: int(env, 'DOWNLOAD_LINK_TTL', 60, 1),
    bootstrapAccount: bool(env, 'BOOTSTRAP_ACCOUNT', true),
    storageFsync: bool(env, 'STORAGE_FSYNC', true),
    hypervisorDelayMs: int(env, 'HYPERVISOR_DELAY_MS', 0),
    stopGraceMs: int(env, 'STOP_GRACE_MS', 8000),
    ...overrides
  }
  if (config.jobLeaseSeconds > 30) throw new Error('setting JOB_LEASE_SECONDS must be at most 30')
  if (!(config.jobRetentionDays > 0)) throw new Error('setting JOB_RETENTION_DAYS must be a positive number')
  return config
}
