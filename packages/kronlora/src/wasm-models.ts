/**
 * The worker side of the WASM backend, shared by its two hosts: Node's worker thread
 * (wasm-worker.ts) and the browser's Web Worker (browser/worker.ts). It owns the WASM models so
 * that loading, training and inference never block the thread that asked (WASM here has no
 * threads of its own). Messages in: `{ id, op, ... }`; out: `{ id, event }` while a request
 * streams, then `{ id, ok, value }` or `{ id, ok: false, message, runtime }`.
 */
// wasm-bindgen's declarations of the module, generated from the Rust (type-only: see binding.ts).
import type * as Wasm from '../wasm/kronlora_wasm.js';

type WasmModel = Wasm.WasmModel;

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

/**
 * The core's file primitives (see crates/kronlora-wasm/src/storage.rs): Node's `fs`
 * (node-storage.ts) or, in a browser, files in memory (browser/memory-storage.ts).
 */
export interface WasmStorage {
  read(path: string): Uint8Array;
  exists(path: string): boolean;
  kind(path: string): 'missing' | 'file' | 'dir' | 'symlink' | 'other';
  list(dir: string): string[];
  createDirAll(dir: string): void;
  createDir(dir: string): void;
  writeNewFile(path: string, bytes: Uint8Array): void;
  rename(from: string, to: string): void;
  removeFile(path: string): void;
  removeEmptyDir(dir: string): void;
}

/** A request to the worker; the main thread's side is wasm-client.ts. */
export type Request =
  | { id: number; op: 'load'; path?: string; files?: Record<string, Uint8Array>; optionsJson: string }
  | { id: number; op: 'call'; model: number; method: WasmMethod; args: unknown[] }
  | { id: number; op: 'free'; model: number }
  | { id: number; op: 'train'; model: number; optionsJson: string; flag: Int32Array }
  /** Write files into `dir` of the worker's storage (the browser's in-memory files). */
  | { id: number; op: 'putFiles'; dir: string; files: Record<string, Uint8Array> }
  /** The files directly in `dir` of the worker's storage, by name; `remove`: then delete them and `dir`. */
  | { id: number; op: 'readFiles'; dir: string; remove?: boolean };

export interface Reply {
  id: number;
  /** A progress message of a streaming request (not its end). */
  event?: unknown;
  ok?: boolean;
  value?: unknown;
  message?: string;
  /** The failure was a WASM trap (a panic), not an error the core returned. */
  runtime?: boolean;
}

/** What a worker needs from its host environment. */
export interface WorkerEnvironment {
  wasm: typeof Wasm;
  storage: WasmStorage;
  /** A model path's files as `[names, contents]` (Node); absent where there are no paths (browser). */
  readModelPath?: (path: string) => [string[], Uint8Array[]];
  post: (reply: Reply) => void;
}

/** Storage failures of the file requests, coded as the core codes its own (`readFiles` of a missing folder is not a kronlora bug). */
function fileOp<T>(op: () => T): T {
  try {
    return op();
  } catch (error) {
    throw new Error(`[ERR_IO] ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** The handler of one worker's requests: call it with each message; it posts the reply. */
export function wasmModels({ wasm, storage, readModelPath, post }: WorkerEnvironment): (req: Request) => void {
  const models = new Map<number, WasmModel>();
  let nextModel = 1;
  const model = (id: number): WasmModel => {
    const m = models.get(id);
    if (!m) throw new Error('[ERR_INVALID_STATE] this model was disposed');
    return m;
  };

  const handle = (req: Request): unknown => {
    switch (req.op) {
      case 'load': {
        let names: string[];
        let contents: Uint8Array[];
        if (req.path !== undefined) {
          if (!readModelPath) throw new Error('[ERR_UNSUPPORTED] this host loads models from file bytes, not paths');
          [names, contents] = readModelPath(req.path);
        } else {
          [names, contents] = [Object.keys(req.files!), Object.values(req.files!)];
        }
        const id = nextModel++;
        models.set(id, wasm.WasmModel.load(names, contents, req.optionsJson));
        return id;
      }
      case 'call': {
        const args = usesStorage.has(req.method) ? [...req.args, storage] : req.args;
        const m = model(req.model);
        return (m[req.method] as (...a: unknown[]) => unknown).apply(m, args);
      }
      case 'train': {
        const onEvent = (event: string) => post({ id: req.id, event });
        return model(req.model).train(req.optionsJson, storage, onEvent, () => Atomics.load(req.flag, 0) === 1);
      }
      case 'free':
        models.get(req.model)?.free();
        models.delete(req.model);
        return undefined;
      case 'putFiles':
        return fileOp(() => {
          // Callers give a new directory each time: nothing there to replace.
          storage.createDirAll(req.dir);
          for (const [name, bytes] of Object.entries(req.files)) storage.writeNewFile(`${req.dir}/${name}`, bytes);
        });
      case 'readFiles':
        return fileOp(() => {
          const files: Record<string, Uint8Array> = {};
          for (const name of storage.list(req.dir)) {
            const path = `${req.dir}/${name}`;
            if (storage.kind(path) === 'file') files[name] = storage.read(path);
          }
          if (req.remove) {
            for (const name of Object.keys(files)) storage.removeFile(`${req.dir}/${name}`);
            storage.removeEmptyDir(req.dir);
          }
          return files;
        });
    }
  };

  return (req) => {
    try {
      post({ id: req.id, ok: true, value: handle(req) });
    } catch (error) {
      const runtime = error instanceof WebAssembly.RuntimeError;
      const message = error instanceof Error ? error.message : String(error);
      post({ id: req.id, ok: false, message, runtime });
    }
  };
}
