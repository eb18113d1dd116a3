// Builds the dashboard into dashboard/dist, served by src/features/dashboard at /dashboard/.
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vite'
import preact from '@preact/preset-vite'

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/dashboard/',
  plugins: [preact()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // the CSP forbids inline scripts and styles: keep every asset a file
    assetsInlineLimit: 0
  },
  server: { proxy: { '/api': 'http://127.0.0.1:3000' } }
})
