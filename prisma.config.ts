// Prisma CLI configuration. The CLI's native engines cannot be downloaded on our machines, so the
// CLI runs its WebAssembly schema engine through the pg driver adapter (README, "Prisma setup").
import { defineConfig } from 'prisma/config'
import { PrismaPg } from '@prisma/adapter-pg'

// `prisma generate` needs no database, but without a URL the 6.x CLI falls back to fetching the
// native query engine; a placeholder keeps it on the engine-less path.
process.env.DATABASE_URL ??= 'postgresql://localhost/clonejobs-placeholder'

// The CLI never ends the adapter's pool; a short idle timeout lets the process exit at once
// instead of waiting 10 s for idle connections.
export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  engine: 'js',
  experimental: { adapter: true },
  adapter: async () => new PrismaPg({ connectionString: process.env.DATABASE_URL, idleTimeoutMillis: 50 })
})
