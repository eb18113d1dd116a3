// Builds the OpenAPI document exactly as the running service would serve it.
import { buildTestApp } from './app.ts'

export async function buildOpenApiDocument (): Promise<unknown> {
  const teardowns: Array<() => Promise<void> | void> = []
  try {
    const { app } = await buildTestApp({ teardown: fn => { teardowns.push(fn) } }, { runWorkers: false })
    // round-trip through JSON so the committed file and the in-memory document compare equal
    return JSON.parse(JSON.stringify(app.swagger()))
  } finally {
    for (const fn of teardowns.reverse()) await fn()
  }
}
