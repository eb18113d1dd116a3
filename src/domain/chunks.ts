// Chunk geometry of the chunked upload protocol (spec §5.2), as pure functions. With a nominal
// chunk size S: n = floor(size / S) chunks; chunks 0..n-2 hold exactly S bytes and the last one
// holds the rest (S to 2S-1 bytes); a file smaller than S is one chunk 0.

export interface ChunkRange {
  /** Offset of the chunk's first byte in the image. */
  start: number
  /** Number of bytes the chunk holds. */
  length: number
}

function checkGeometry (size: number, chunkSize: number): void {
  if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`size must be a positive integer, got ${size}`)
  if (!Number.isSafeInteger(chunkSize) || chunkSize < 1) throw new RangeError(`chunk size must be a positive integer, got ${chunkSize}`)
}

/**
 * Most chunks one upload may have: chunk numbers are PostgreSQL integers (upload_chunks.number,
 * transfer_links.chunk_number).
 */
export const MAX_CHUNKS = 2 ** 31 - 1

/** Why `chunkSize` cannot cut `size` bytes (into more than MAX_CHUNKS chunks), or undefined when it can. */
export function tooManyChunks (size: number, chunkSize: number): string | undefined {
  const count = chunkCount(size, chunkSize)
  if (count <= MAX_CHUNKS) return undefined
  return `Chunks of ${chunkSize} bytes cut ${size} bytes into ${count} chunks; at most ${MAX_CHUNKS} are allowed: use chunks of at least ${Math.floor(size / (MAX_CHUNKS + 1)) + 1} bytes`
}

/** How many chunks an image of `size` bytes has with nominal chunk size `chunkSize`. */
export function chunkCount (size: number, chunkSize: number): number {
  checkGeometry(size, chunkSize)
  return Math.max(1, Math.floor(size / chunkSize))
}

/** Where chunk `number` lies, or undefined when there is no such chunk. */
export function chunkRange (size: number, chunkSize: number, number: number): ChunkRange | undefined {
  const count = chunkCount(size, chunkSize)
  if (!Number.isSafeInteger(number) || number < 0 || number >= count) return undefined
  const start = number * chunkSize
  const length = number === count - 1 ? size - start : chunkSize
  return { start, length }
}

/** The chunk numbers not in `present`, ascending. */
export function missingChunks (size: number, chunkSize: number, present: Iterable<number>): number[] {
  const have = new Set(present)
  const out: number[] = []
  for (let i = 0; i < chunkCount(size, chunkSize); i++) if (!have.has(i)) out.push(i)
  return out
}

/**
 * The claim group of an upload's chunks: each chunk being received is claimed as a member of it
 * (db/session-locks.ts), so a DELETE can ask whether any chunk of the drive is being written now.
 * It names the drive's owner as well as the drive: a resumable.js chunk is claimed before its
 * lookup proves the drive is the caller's, and a claim in another account's name then holds
 * nothing of the owner's (no chunk of theirs refused as being received, no DELETE of theirs busy).
 */
export function chunkClaimGroup (ownerId: string, driveId: string): string {
  return `upload_chunk:${ownerId.toLowerCase()}:${driveId.toLowerCase()}`
}
