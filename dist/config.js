// Settings, read once from the environment, with defaults that let `npm start` work unconfigured.
import path from 'node:path';
const TiB = 1024 ** 4;
function int(env, name, fallback, min = 0) {
    const raw = env[name];
    if (raw === undefined || raw === '')
        return fallback;
    const value = Number(raw);
    if (!Number.isSafeInteger(value) || value < min) {
        throw new Error(`setting ${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
    }
    return value;
}
function bool(env, name, fallback) {
    const raw = env[name];
    if (raw === undefined || raw === '')
        return fallback;
    if (/^(1|true|yes|on)$/i.test(raw))
        return true;
    if (/^(0|false|no|off)$/i.test(raw))
        return false;
    throw new Error(`setting ${name} must be a boolean, got ${JSON.stringify(raw)}`);
}
export function loadConfig(env = process.env, overrides = {}) {
    const dataDir = path.resolve(env.DATA_DIR ?? './data');
    const config = {
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
    };
    if (config.jobLeaseSeconds > 30)
        throw new Error('setting JOB_LEASE_SECONDS must be at most 30');
    if (!(config.jobRetentionDays > 0))
        throw new Error('setting JOB_RETENTION_DAYS must be a positive number');
    return config;
}
//# sourceMappingURL=config.js.map