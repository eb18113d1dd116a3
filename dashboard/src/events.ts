// The account's live change stream (GET /api/2.0/jobs/events/). EventSource cannot send an
// Authorization header, so the stream is read with fetch() and parsed by eventsource-parser;
// it reconnects with Last-Event-ID so no frame is lost across a dropped connection.
import { createParser } from 'eventsource-parser'
import { authHeaders } from './api.ts'

/** `change`: added, changed or removed (a removed frame has no object) */
export interface Frame { change?: 'added' | 'changed' | 'removed', resource_type: string, resource_uri: string, object?: unknown }

export type Listener = (frame: Frame) => void
export type StreamState = 'connecting' | 'live' | 'retrying'

export function openEvents (onFrame: Listener, onState: (s: StreamState) => void): () => void {
  const abort = new AbortController()
  let lastId: string | undefined
  let retryMs = 2000

  const run = async (): Promise<void> => {
    while (!abort.signal.aborted) {
      onState('connecting')
      try {
        const res = await fetch('/api/2.0/jobs/events/', {
          headers: { accept: 'text/event-stream', ...authHeaders(), ...(lastId ? { 'last-event-id': lastId } : {}) },
          credentials: 'omit',
          signal: abort.signal
        })
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`)
        onState('live')
        const parser = createParser({
          onEvent: (e) => {
            if (e.id) lastId = e.id
            try { onFrame(JSON.parse(e.data) as Frame) } catch { /* a frame that is not JSON is skipped */ }
          },
          onRetry: (ms) => { retryMs = ms }
        })
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
        for (;;) {
          const { value, done } = await reader.read()
          if (done) break
          parser.feed(value)
        }
      } catch {
        if (abort.signal.aborted) return
      }
      onState('retrying')
      await new Promise(resolve => setTimeout(resolve, retryMs))
    }
  }
  void run()
  return () => abort.abort()
}
