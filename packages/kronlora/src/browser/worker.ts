/**
 * The browser's Web Worker that owns the WASM models (Node's counterpart: wasm-worker.ts): the
 * same request handler (wasm-models.ts) on wasm-bindgen's web glue and files in memory.
 */
import init, * as web from '../../wasm-web/kronlora_wasm.js';
import type * as Wasm from '../../wasm/kronlora_wasm.js';
import { type Request, wasmModels } from '../wasm-models.js';
import { MemoryStorage } from './memory-storage.js';

interface WorkerScope {
  postMessage(message: unknown): void;
  onmessage: ((event: MessageEvent<Request>) => void) | null;
}
const scope = globalThis as unknown as WorkerScope;

// The web glue fetches kronlora_wasm_bg.wasm beside itself (bundlers rewrite that URL).
const ready = init();
const handle = wasmModels({
  // The web glue's exports are the Node glue's, plus its initialisers.
  wasm: web as unknown as typeof Wasm,
  storage: new MemoryStorage(),
  post: (reply) => scope.postMessage(reply),
});

scope.onmessage = (event) => {
  ready.then(
    () => handle(event.data),
    (error) =>
      scope.postMessage({
        id: event.data.id,
        ok: false,
        message: `[ERR_BACKEND] the WASM core failed to load: ${error instanceof Error ? error.message : String(error)}`,
      }),
  );
};
