// `npm run depcheck`: every import in src/ runs down the layers, and there are no cycles.
// Layers, top to bottom (a layer may import any layer below it, never one above):
const LAYERS = [
  ['entry', '^src/(server\\.ts|cli/)'],
  ['app', '^src/app\\.ts$'],
  ['features', '^src/features/'],
  ['plugins', '^src/plugins/'],
  ['http', '^src/http/'],
  ['engine', '^src/engine/'],
  ['storage', '^src/(storage|hypervisor)/'],
  ['domain', '^src/domain/'],
  ['db', '^src/(db/|config\\.ts$)']
]

const upward = []
LAYERS.forEach(([name, path], i) => {
  const above = LAYERS.slice(0, i)
  if (above.length === 0) return
  upward.push({
    name: `${name}-imports-upward`,
    comment: `${name} (${path}) may not import a layer above it: ${above.map(([n]) => n).join(', ')}`,
    severity: 'error',
    from: { path },
    to: { path: above.map(([, p]) => p) }
  })
})

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'An import cycle in src/ (type-only imports count too)',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true }
    },
    ...upward
  ],
  options: {
    includeOnly: '^src/',
    doNotFollow: { path: ['node_modules', '^src/db/generated/'] },
    exclude: { path: '^src/db/generated/' },
    // type-only imports are dependencies too
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] }
  }
}
