import neostandard from 'neostandard'

export default [
  ...neostandard({ ts: true, ignores: ['src/db/generated/**', 'node_modules/**', 'data/**', 'openapi/**', '.tap/**', 'dashboard/dist/**', 'test-output/**', 'dist/**'] }),
  {
    rules: {
      // `void promise` marks a deliberately unawaited promise (timers, event handlers)
      'no-void': ['error', { allowAsStatement: true }]
    }
  }
]
