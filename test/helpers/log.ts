// A logger that keeps every line in memory, for tests that assert on what the engine logged.
import type { FastifyBaseLogger } from 'fastify'

export interface Line { level: string, msg: string, obj: Record<string, unknown> }

export function memoryLogger (): { log: FastifyBaseLogger, lines: Line[] } {
  const lines: Line[] = []
  const at = (level: string) => (a: unknown, b?: unknown) => {
    const obj = typeof a === 'object' && a !== null ? a as Record<string, unknown> : {}
    const msg = typeof a === 'string' ? a : String(b ?? '')
    lines.push({ level, msg, obj })
  }
  const log = {
    level: 'trace',
    fatal: at('fatal'),
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    trace: at('trace'),
    silent: () => {},
    child: () => log
  }
  return { log: log as unknown as FastifyBaseLogger, lines }
}
