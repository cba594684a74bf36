// Builds the UI into dist/, which is committed and embedded in the `chorus` binary
// (crates/chorus-server/build.rs); scripts/test checks that dist/ matches the sources.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

export default defineConfig({
  resolve: {
    // The TypeScript client package, from its sources (one build, no publish step).
    alias: { '@chorus/client': fileURLToPath(new URL('../clients/ts/src/index.ts', import.meta.url)) },
  },
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // Small enough to embed; no source maps in the binary.
    sourcemap: false,
    assetsInlineLimit: 0,
  },
  server: {
    // `npm run dev`: the UI with hot reload against a `chorus serve --dev` on :7800.
    proxy: {
      '/api': 'http://127.0.0.1:7800',
      '/ws': { target: 'ws://127.0.0.1:7800', ws: true },
      '/metrics': 'http://127.0.0.1:7800',
      '/healthz': 'http://127.0.0.1:7800',
    },
  },
});
