/**
 * The WASM backend's worker thread: it owns the WASM models so that loading and inference do
 * not block the JavaScript thread (WASM here has no threads of its own). Messages in:
 * `{ id, op, ... }`; out: `{ id, ok, value }` or `{ id, ok: false, message }`.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
// wasm-bindgen's declarations of the module, generated from the Rust (type-only: see backend.ts).
import type * as Wasm from '../wasm/kronlora_wasm.js';
import { nodeStorage as storage } from './node-storage.js';

type WasmModel = Wasm.WasmModel;

const wasm = createRequire(import.meta.url)(workerData.modulePath as string) as typeof Wasm;
const models = new Map<number, WasmModel>();
let nextModel = 1;

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

/** The `WasmModel` methods the main thread calls by name (`train` and `free` have ops of their own). */
export type WasmMethod = Exclude<keyof WasmModel, 'train' | 'free' | symbol>;
/** Methods whose last argument is the storage (filled in here, not sent by the main thread). */
type StorageMethod = 'evaluate' | 'saveAdapter' | 'exportAdapter' | 'saveMerged' | 'loadAdapter';
const usesStorage = new Set<WasmMethod>([
  'evaluate',
  'saveAdapter',
  'exportAdapter',
  'saveMerged',
  'loadAdapter',
] satisfies StorageMethod[]);
type DropLast<T extends unknown[]> = T extends [...infer Head, unknown] ? Head : T;
/** A method's arguments as the main thread sends them. */
export type WasmArgs<M extends WasmMethod> = M extends StorageMethod ? DropLast<Parameters<WasmModel[M]>> : Parameters<WasmModel[M]>;

/** A request to this worker; the main thread's side is `WasmHost`. */
export type Request =
  | { id: number; op: 'load'; path?: string; files?: Record<string, Uint8Array>; optionsJson: string }
  | { id: number; op: 'call'; model: number; method: WasmMethod; args: unknown[] }
  | { id: number; op: 'free'; model: number }
  | { id: number; op: 'train'; model: number; optionsJson: string; flag: Int32Array };

function handle(req: Request): unknown {
  switch (req.op) {
    case 'load': {
      const [names, contents] = req.path !== undefined ? readModelFiles(req.path) : [Object.keys(req.files!), Object.values(req.files!)];
      const model = wasm.WasmModel.load(names, contents, req.optionsJson);
      const id = nextModel++;
      models.set(id, model);
      return id;
    }
    case 'call': {
      const model = models.get(req.model);
      if (!model) throw new Error('[ERR_INVALID_STATE] this model was disposed');
      const args = usesStorage.has(req.method) ? [...req.args, storage] : req.args;
      return (model[req.method] as (...a: unknown[]) => unknown).apply(model, args);
    }
    case 'train': {
      const model = models.get(req.model);
      if (!model) throw new Error('[ERR_INVALID_STATE] this model was disposed');
      const onEvent = (event: string) => parentPort!.postMessage({ id: req.id, event });
      return model.train(req.optionsJson, storage, onEvent, () => Atomics.load(req.flag, 0) === 1);
    }
    case 'free':
      models.get(req.model)?.free();
      models.delete(req.model);
      return undefined;
  }
}

parentPort!.on('message', (req: Request) => {
  try {
    parentPort!.postMessage({ id: req.id, ok: true, value: handle(req) });
  } catch (error) {
    const runtime = error instanceof WebAssembly.RuntimeError;
    const message = error instanceof Error ? error.message : String(error);
    parentPort!.postMessage({ id: req.id, ok: false, message, runtime });
  }
});
