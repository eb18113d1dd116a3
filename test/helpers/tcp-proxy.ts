// A TCP proxy in front of PostgreSQL that a test can stall (bytes stop flowing both ways, as with
// a hung server or a lost network) or cut (connections reset and new ones refused).
import net from 'node:net'

export interface TcpProxy {
  port: number
  /** Rewrites a postgresql:// URL to go through the proxy. */
  url: (databaseUrl: string) => string
  /** Holds every byte in both directions until resume(). */
  stall: () => void
  /** Resets every connection and refuses new ones until resume(). */
  cut: () => void
  resume: () => void
  close: () => Promise<void>
}

export async function startTcpProxy (target: { host: string, port: number }): Promise<TcpProxy> {
  const pairs = new Set<[net.Socket, net.Socket]>()
  let mode: 'open' | 'stalled' | 'cut' = 'open'
  const server = net.createServer(client => {
    if (mode === 'cut') { client.destroy(); return }
    const upstream = net.connect(target.port, target.host)
    const pair: [net.Socket, net.Socket] = [client, upstream]
    pairs.add(pair)
    client.pipe(upstream)
    upstream.pipe(client)
    if (mode === 'stalled') { client.pause(); upstream.pause() }
    const drop = () => { pairs.delete(pair); client.destroy(); upstream.destroy() }
    client.on('error', drop).on('close', drop)
    upstream.on('error', drop).on('close', drop)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  return {
    port,
    url: (databaseUrl) => {
      const u = new URL(databaseUrl)
      u.hostname = '127.0.0.1'
      u.port = String(port)
      return u.toString()
    },
    stall: () => {
      mode = 'stalled'
      // unpipe so paused streams do not resume on their own
      for (const [a, b] of pairs) { a.unpipe(b); b.unpipe(a); a.pause(); b.pause() }
    },
    cut: () => {
      mode = 'cut'
      for (const [a, b] of pairs) { a.destroy(); b.destroy() }
      pairs.clear()
    },
    resume: () => {
      mode = 'open'
      for (const [a, b] of pairs) { a.pipe(b); b.pipe(a); a.resume(); b.resume() }
    },
    close: async () => {
      for (const [a, b] of pairs) { a.destroy(); b.destroy() }
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
}
