// The bounds of a job's log (src/engine/log.ts), shared with the finish statement that writes a
// job's last lines (src/engine/queue-sql.ts).

/** Lines kept per job (older ones are dropped as new ones arrive). */
export const LOG_MAX_LINES = 1000
/** Longer lines are cut to this many characters. */
export const LOG_MAX_LINE_CHARS = 2000
/** Lines shown in the job object (data.log_excerpt). */
export const LOG_EXCERPT_LINES = 3
