// The jobs feature: the /api/2.0/jobs/ API (mounted under the API prefix) and the live change
// events (SSE under /api/2.0/jobs/events/, websockets outside it, so mounted at the root).
export { default } from './routes.ts'
export { default as jobEvents } from './events.ts'
