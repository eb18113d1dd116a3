// A free TCP port on localhost, for tests that start real processes.
import net from 'node:net'
import { once } from 'node:events'

export async function freePort (): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port
  server.close()
  return port
}
