// A TCP proxy between a client under test and PostgreSQL, to cut or freeze the connection the way a
// network does: `halfOpen()` keeps every socket open but silently drops bytes both ways (a dead
// peer behind a NAT: no FIN, no RST), `cut()` resets every connection, `heal()` forwards again.
import net from 'node:net'
import { once } from 'node:events'

export interface TcpProxy {
  /** a connection string that goes through the proxy */
  url: string
  port: number
  halfOpen: () => void
  heal: () => void
  cut: () => void
  /** connections accepted so far */
  readonly accepted: number
  close: () => Promise<void>
}

export async function startTcpProxy (databaseUrl: string): Promise<TcpProxy> {
  const target = new URL(databaseUrl)
  const sockets = new Set<net.Socket>()
  let dropping = false
  let accepted = 0
  const server = net.createServer((client) => {
    accepted++
    const upstream = net.connect(Number(target.port || 5432), target.hostname)
    for (const [from, to] of [[client, upstream], [upstream, client]] as const) {
      sockets.add(from)
      from.on('data', (chunk) => { if (!dropping && !to.destroyed) to.write(chunk) })
      from.on('error', () => {})
      from.on('close', () => { sockets.delete(from); to.destroy() })
    }
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port
  const url = new URL(databaseUrl)
  url.hostname = '127.0.0.1'
  url.port = String(port)
  const cut = () => { for (const s of sockets) s.resetAndDestroy() }
  return {
    url: url.toString(),
    port,
    halfOpen: () => { dropping = true },
    heal: () => { dropping = false },
    cut,
    get accepted () { return accepted },
    close: async () => {
      cut()
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
}
