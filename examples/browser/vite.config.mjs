// `npm run browser-demo`: Vite's dev server for the page in this folder. It serves kronlora/browser
// from packages/kronlora (dist/, wasm-web/), sends the headers that make the page cross-origin
// isolated (SharedArrayBuffer: stopping a run after a step), and offers the models
// `npm run fetch-models` cached in .cache/models under /models/ (index: /models/index.json).
import { createReadStream, existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '../..');
// KRONLORA_DEMO_MODELS serves another folder of models (test/browser.test.ts: tiny ones).
const models = process.env.KRONLORA_DEMO_MODELS || join(repo, '.cache/models');

/** Cached model folders (config.json + tokenizer.json + model.safetensors) and .gguf files. */
function cachedModels() {
  if (!existsSync(models)) return [];
  const out = [];
  for (const name of readdirSync(models).sort()) {
    const path = join(models, name);
    if (!statSync(path).isDirectory()) continue;
    const files = readdirSync(path);
    if (['config.json', 'tokenizer.json', 'model.safetensors'].every((f) => files.includes(f))) {
      out.push({ name, url: `/models/${name}/`, kind: 'folder' });
    }
    for (const f of files.filter((f) => f.endsWith('.gguf'))) out.push({ name: `${name}/${f}`, url: `/models/${name}/${f}`, kind: 'gguf' });
  }
  return out;
}

/** Serves .cache/models read-only; names are checked, so nothing outside it is reachable. */
function serveCachedModels(server) {
  server.middlewares.use('/models', (req, res, next) => {
    let path;
    try {
      path = decodeURIComponent((req.url ?? '/').split('?')[0]);
    } catch {
      res.statusCode = 400;
      res.end('bad URL');
      return;
    }
    if (path === '/index.json') {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify(cachedModels()));
      return;
    }
    const m = /^\/([\w.-]+)\/([\w.-]+)$/.exec(path);
    const file = m && !m[1].startsWith('.') && !m[2].startsWith('.') && join(models, m[1], m[2]);
    if (!file || !existsSync(file) || !statSync(file).isFile()) {
      if (m) {
        res.statusCode = 404;
        res.end('not found');
        return;
      }
      return next();
    }
    res.setHeader('Content-Length', statSync(file).size);
    res.setHeader('Content-Type', 'application/octet-stream');
    createReadStream(file).pipe(res);
  });
}

/** The same models for `vite` (dev) and `vite preview` (a production build). */
function cachedModelsPlugin() {
  return { name: 'kronlora-cached-models', configureServer: serveCachedModels, configurePreviewServer: serveCachedModels };
}

const isolation = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };

export default defineConfig({
  root: here,
  // Vite's own cache, not in the source folder.
  cacheDir: join(repo, 'node_modules/.vite-browser-demo'),
  plugins: [cachedModelsPlugin()],
  server: { headers: isolation, fs: { allow: [repo] } },
  preview: { headers: isolation },
  // kronlora's worker and WASM are found through `new URL(..., import.meta.url)`: serve its files as they are.
  optimizeDeps: { exclude: ['kronlora'] },
  logLevel: process.env.VITEST ? 'warn' : 'info',
});
