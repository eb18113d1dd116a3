// Free TCP ports on localhost, for tests that start real processes.
import net from 'node:net'
import { once } from 'node:events'

/**
 * `n` distinct free ports. Every listener stays open until all are chosen: a port closed before the
 * next bind(0) can be handed out again, and a service given the same port for HTTP and for its
 * embedded PostgreSQL fails with EADDRINUSE (seen in CI).
 */
export async function freePorts (n: number): Promise<number[]> {
  const servers = Array.from({ length: n }, () => net.createServer().listen(0, '127.0.0.1'))
  try {
    await Promise.all(servers.map(s => once(s, 'listening')))
    return servers.map(s => (s.address() as net.AddressInfo).port)
  } finally {
    await Promise.all(servers.map(s => new Promise(resolve => s.close(resolve))))
  }
}

export async function freePort (): Promise<number> {
  return (await freePorts(1))[0]
}
