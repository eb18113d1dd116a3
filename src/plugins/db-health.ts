// The database's reachability, probed with a time limit so health checks never hang on a stalled
// server, and cached briefly so a busy /healthz costs at most one `SELECT 1` a second.
import fp from 'fastify-plugin'

export interface DbHealth {
  /** true when `SELECT 1` answers within `timeoutMs`. */
  probe: (timeoutMs: number) => Promise<boolean>
  /** The last probe's answer when it is under a second old; otherwise a fresh probe (500 ms limit). */
  recent: () => Promise<boolean>
}

declare module 'fastify' {
  interface FastifyInstance {
    dbHealth: DbHealth
  }
}

const CACHE_MS = 1000

export default fp(async (app) => {
  let last: { up: boolean, at: number } | undefined
  let inflight: Promise<boolean> | undefined

  const probe = async (timeoutMs: number): Promise<boolean> => {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<boolean>(resolve => { timer = setTimeout(() => resolve(false), timeoutMs) })
    const query = app.prisma.$queryRaw`SELECT 1`.then(() => true, () => false)
    const up = await Promise.race([query, timeout]).finally(() => clearTimeout(timer))
    last = { up, at: Date.now() }
    return up
  }

  const recent = async (): Promise<boolean> => {
    if (last && Date.now() - last.at < CACHE_MS) return last.up
    inflight ??= probe(500).finally(() => { inflight = undefined })
    return inflight
  }

  app.decorate('dbHealth', { probe, recent })
}, { name: 'db-health', dependencies: ['prisma'] })
