// Job logs (TrueNAS keeps one per job): the lines a handler writes with ctx.log, stored in
// `job_log`. Lines are buffered and written in batches (one statement per flush, not one round
// trip per line); every batch is fenced by (job id, lease owner, attempt) like the handler's other
// writes, so a stale attempt's lines are dropped. Each job keeps its last LOG_MAX_LINES lines of at
// most LOG_MAX_LINE_CHARS characters; the last LOG_EXCERPT_LINES also go to jobs.log_tail (the
// job's data.log_excerpt). Rows go with their job (ON DELETE CASCADE), so the purge removes them.
import type pg from 'pg'
import type { PrismaClient, Tx } from '../db/client.ts'
import { CHANNELS } from './listener.ts'
import { LOG_EXCERPT_LINES, LOG_MAX_LINE_CHARS, LOG_MAX_LINES } from './log-limits.ts'
import { UNFINISHED } from './queue-sql.ts'

export { LOG_EXCERPT_LINES, LOG_MAX_LINE_CHARS, LOG_MAX_LINES }

type Db = PrismaClient | Tx | pg.Pool

/** A buffered line waits at most this long before it is written. */
const FLUSH_MS = 200

async function query<T> (db: Db, sql: string, params: unknown[]): Promise<T[]> {
  if ('$queryRawUnsafe' in db) return db.$queryRawUnsafe<T[]>(sql, ...params)
  return (await db.query(sql, params)).rows as T[]
}

/**
 * Appends lines to a job's log if (id, owner, attempt) still holds the job: one statement that
 * checks the lease, inserts, trims the log to LOG_MAX_LINES, updates the excerpt and NOTIFYs
 * followers. Returns false when refused (the lines are dropped).
 */
export async function appendLog (db: Db, key: { id: string, attempt: number }, owner: string, lines: Array<{ at: Date, line: string }>): Promise<boolean> {
  if (lines.length === 0) return true
  const batch = lines.slice(-LOG_MAX_LINES)
  const rows = await query<{ ok: boolean }>(db, `
    WITH j AS (
      UPDATE jobs SET log_tail = (COALESCE(log_tail, '{}') || $4::text[])[GREATEST(1, cardinality(COALESCE(log_tail, '{}') || $4::text[]) - ${LOG_EXCERPT_LINES - 1}):]
      WHERE id = $1::uuid AND locked_by = $2 AND attempts = $3 AND state IN ${UNFINISHED}
      RETURNING id
    ),
    ins AS (
      INSERT INTO job_log (job_id, attempt, at, line)
      SELECT j.id, $3, x.at, x.line FROM j, unnest($5::timestamptz[], $4::text[]) WITH ORDINALITY AS x(at, line, n)
      ORDER BY x.n
      RETURNING 1
    ),
    -- the statement sees the log as it was before this batch: keep LOG_MAX_LINES minus the batch
    trimmed AS (
      DELETE FROM job_log WHERE EXISTS (SELECT 1 FROM j) AND job_id = $1::uuid AND id <= (
        SELECT id FROM job_log WHERE job_id = $1::uuid ORDER BY id DESC OFFSET $6 LIMIT 1)
      RETURNING 1
    ),
    woken AS (
      SELECT pg_notify('${CHANNELS.events}', json_build_object('log', id::text)::text) FROM j
    )
    SELECT EXISTS (SELECT 1 FROM j) AS ok, (SELECT count(*) FROM ins) AS n, (SELECT count(*) FROM trimmed) AS t, (SELECT count(*) FROM woken) AS w`,
  [key.id, owner, key.attempt, batch.map(l => l.line), batch.map(l => l.at.toISOString()), Math.max(0, LOG_MAX_LINES - batch.length)])
  return rows[0]?.ok === true
}

export interface LogLine { id: bigint, attempt: number, at: Date, line: string }

/** The stored lines of a job after line id `after`, oldest first. */
export async function readLog (db: Db, jobId: string, after: bigint = 0n, limit = LOG_MAX_LINES): Promise<LogLine[]> {
  const rows = await query<{ id: string, attempt: number, at: Date, line: string }>(db,
    // ORDER BY the bigint column: a bare `id` would name the text output column (10 before 9)
    'SELECT id::text, attempt, at, line FROM job_log WHERE job_id = $1::uuid AND id > $2::bigint ORDER BY job_log.id LIMIT $3',
    [jobId, after.toString(), limit])
  return rows.map(r => ({ id: BigInt(r.id), attempt: r.attempt, at: new Date(r.at), line: r.line }))
}

/** One line of text/plain log output: ISO time, attempt, the line. */
export function formatLogLine (l: LogLine): string {
  return `${l.at.toISOString()} [${l.attempt}] ${l.line}\n`
}

/** Control characters other than tab become spaces; a line longer than the cap is cut. */
function clean (text: string): string {
  // eslint-disable-next-line no-control-regex
  const one = text.replace(/[\u0000-\u0008\u000a-\u001f\u007f]/g, ' ')
  return one.length > LOG_MAX_LINE_CHARS ? one.slice(0, LOG_MAX_LINE_CHARS - 1) + '…' : one
}

/**
 * The buffered log of one attempt of a job. `write` never blocks and never throws; lines are
 * written within FLUSH_MS, and `flush` writes them now (the engine flushes before it records the
 * job's end, which clears the lease the lines are fenced by).
 */
export class JobLogWriter {
  private buffer: Array<{ at: Date, line: string }> = []
  private timer: NodeJS.Timeout | undefined
  private chain: Promise<void> = Promise.resolve()
  /** set once a batch was refused: the attempt is stale and nothing more is written */
  refused = false

  constructor (
    private readonly db: () => Db,
    private readonly key: { id: string, attempt: number },
    private readonly owner: string,
    private readonly onError: (err: unknown) => void,
    private readonly onRefused?: () => void
  ) {}

  write (text: string): void {
    if (this.refused) return
    for (const line of String(text).split('\n')) this.buffer.push({ at: new Date(), line: clean(line) })
    if (this.buffer.length > LOG_MAX_LINES) this.buffer.splice(0, this.buffer.length - LOG_MAX_LINES)
    if (!this.timer) {
      this.timer = setTimeout(() => { this.timer = undefined; void this.flush() }, FLUSH_MS)
      this.timer.unref()
    }
  }

  /** Writes the buffered lines (through `db` when given, e.g. the transaction that ends the job). */
  flush (db?: Db): Promise<void> {
    clearTimeout(this.timer)
    this.timer = undefined
    const lines = this.buffer
    this.buffer = []
    this.chain = this.chain.then(async () => {
      if (lines.length === 0 || this.refused) return
      try {
        if (!await appendLog(db ?? this.db(), this.key, this.owner, lines)) {
          this.refused = true
          this.onRefused?.()
        }
      } catch (err) {
        this.onError(err)
      }
    })
    return this.chain
  }

  /**
   * Ends the writer: waits for the batches in flight and hands over the lines still buffered, to
   * be written by the statement that records the job's end (one statement instead of two). None
   * when a batch was refused (the attempt is stale).
   */
  async take (): Promise<Array<{ at: Date, line: string }>> {
    clearTimeout(this.timer)
    this.timer = undefined
    await this.chain
    const lines = this.buffer
    this.buffer = []
    return this.refused ? [] : lines
  }

  /** Stops the timer and drops what is buffered (the attempt is over without a record). */
  discard (): void {
    clearTimeout(this.timer)
    this.timer = undefined
    this.buffer = []
  }
}

/** Milliseconds since `t0` (performance.now()), rounded for log lines. */
export function msSince (t0: number): number {
  return Math.round(performance.now() - t0)
}
