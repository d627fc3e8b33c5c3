/**
 * The WASM backend's worker thread in Node: wasm-models.ts on Node's `fs`. Model paths are read
 * here (a `.gguf` file, or a directory's JSON and safetensors files).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import type * as Wasm from '../wasm/kronlora_wasm.js';
import { nodeStorage } from './node-storage.js';
import { type Request, wasmModels } from './wasm-models.js';

/**
 * The files of a model path: a `.gguf` file, or a directory's JSON and safetensors files (the
 * core picks what it needs among them, by file name). They are passed under their paths so
 * that errors name them as the native backend does. File-system failures get the core's code.
 */
function readModelFiles(path: string): [string[], Uint8Array[]] {
  try {
    const names = statSync(path).isDirectory()
      ? readdirSync(path)
          .filter((f) => /\.(json|safetensors)$/i.test(f))
          .map((f) => join(path, f))
      : [path];
    return [names, names.map((n) => readFileSync(n))];
  } catch (error) {
    throw new Error(`[ERR_INVALID_MODEL] ${path}: cannot read the model: ${error instanceof Error ? error.message : String(error)}`);
  }
}

const handle = wasmModels({
  wasm: createRequire(import.meta.url)(workerData.modulePath as string) as typeof Wasm,
  storage: nodeStorage,
  readModelPath: readModelFiles,
  post: (reply) => parentPort!.postMessage(reply),
});
parentPort!.on('message', (req: Request) => handle(req));
