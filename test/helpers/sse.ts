// A tiny server-sent-events client for tests: collects parsed frames from a live stream.
import http from 'node:http'

export interface SseFrame { id?: string, event?: string, data: any }

export interface SseStream {
  frames: SseFrame[]
  status: number
  /** Resolves with the first collected frame (from now on, or already there) matching `pred`. */
  next: (pred: (f: SseFrame) => boolean, timeoutMs?: number) => Promise<SseFrame>
  close: () => void
}

export function openSse (base: string, path: string, headers: Record<string, string>): Promise<SseStream> {
  return new Promise((resolve, reject) => {
    const req = http.get(base + path, { headers: { accept: 'text/event-stream', ...headers } }, (res) => {
      const frames: SseFrame[] = []
      const waiters: Array<() => void> = []
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        text += chunk
        let at: number
        while ((at = text.indexOf('\n\n')) >= 0) {
          const block = text.slice(0, at)
          text = text.slice(at + 2)
          const f: Partial<SseFrame> = {}
          for (const line of block.split('\n')) {
            if (line.startsWith('id: ')) f.id = line.slice(4)
            else if (line.startsWith('event: ')) f.event = line.slice(7)
            else if (line.startsWith('data: ')) f.data = JSON.parse(line.slice(6))
          }
          if (f.data !== undefined) {
            frames.push(f as SseFrame)
            for (const w of waiters.splice(0)) w()
          }
        }
      })
      const stream: SseStream = {
        frames,
        status: res.statusCode ?? 0,
        next: (pred, timeoutMs = 5000) => new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('no matching frame within ' + timeoutMs + ' ms')), timeoutMs)
          const check = () => {
            const f = frames.find(pred)
            if (f) { clearTimeout(timer); resolve(f) } else waiters.push(check)
          }
          check()
        }),
        close: () => { req.destroy() }
      }
      resolve(stream)
    })
    req.on('error', reject)
  })
}
