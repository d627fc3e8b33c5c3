/**
 * Backend selection: the native addon (napi-rs) when it loads, the WASM build otherwise; for a
 * model on a GPU (`device: 'cuda' | 'auto'`), the CUDA build of the native addon
 * (`native/kronlora.<triple>.cuda.node`, `npm run build:cuda`) when it loads and sees a GPU.
 * `KRONLORA_BACKEND=native|cuda|wasm` forces one. All expose the same raw interface below.
 *
 * The bindings' types are the declarations their builds generate from the Rust signatures
 * (napi-rs: native/native.d.ts, wasm-bindgen: wasm/kronlora_wasm.d.ts; scripts/build.sh writes
 * both before tsc runs). The imports are type-only, so dist/ does not load them: when a binding's
 * signature changes, tsc fails here until the TypeScript follows.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import type * as Native from '../native/native.js';
import type * as Wasm from '../wasm/kronlora_wasm.js';
import { KronLoraError, fromBackendError } from './errors.js';
import { nodeStorage } from './node-storage.js';
import { WasmHost } from './wasm-host.js';
import type { WasmArgs, WasmMethod } from './wasm-worker.js';

export type BackendName = 'native' | 'cuda' | 'wasm';

/** A tensor as the bindings pass it. */
export type RawNamedTensor = Native.NamedTensor;

/**
 * What `NativeLayer` (napi) and `WasmLayer` (wasm-bindgen) both implement: napi's declaration,
 * which `WasmLayer` is checked against where it is created (and `free()`, WASM's only).
 */
export type RawLayer = Native.NativeLayer & { free?(): void };

export type AdapterType = 'kron-lora' | 'lora';

/** Row-major rows × width floats. */
export type FloatRows = Native.FloatRows;

/** What both bindings' models offer, all asynchronous (native: libuv pool; WASM: a worker). */
export interface RawModel {
  describe(): Promise<string>;
  addAdapter(name: string, optionsJson: string): Promise<number>;
  /** `optionsJson` of the inference calls: `{ adapter? }`, checked by the core. */
  embed(texts: string[], optionsJson: string): Promise<FloatRows>;
  logits(texts: string[], optionsJson: string): Promise<FloatRows>;
  classify(texts: string[], optionsJson: string): Promise<string>;
  /** `optionsJson`: `{ maxTokens?, temperature?, seed? }`, checked and defaulted by the core. */
  generate(prompt: string, optionsJson: string): Promise<string>;
  /** Start training; events and the result come through the handle. */
  train(optionsJson: string): Promise<RawTraining>;
  evaluate(dataJson: string, optionsJson: string): Promise<string>;
  saveAdapter(dir: string, name?: string): Promise<void>;
  /** `optionsJson`: `{ format, name? }`, checked by the core. */
  exportAdapter(path: string, optionsJson: string): Promise<void>;
  saveMerged(path: string): Promise<void>;
  /** `optionsJson`: `{ name?, replace? }`. */
  loadAdapter(dir: string, optionsJson: string): Promise<number>;
  /** `json`: `{ adapters, weights? }`. */
  setActiveAdapters(json: string): Promise<void>;
  deleteAdapter(name: string): Promise<void>;
  mergeAdapters(): Promise<number>;
  unmergeAdapters(): Promise<number>;
  dispose(): void;
}

/** A training run in a backend: pull events (JSON; null at the end), the result, cancel. */
export interface RawTraining {
  next(): Promise<string | null>;
  finish(): Promise<string>;
  cancel(): void;
}

/** A model directory or `.gguf` path, or (WASM only, e.g. in a browser) the files' bytes by name. */
export type ModelFiles = string | Record<string, Uint8Array>;

export interface Binding {
  readonly name: BackendName;
  createLayer(kind: AdapterType, optionsJson: string, weight?: Float32Array, bias?: Float32Array): RawLayer;
  factorization(dim: number, factor: number): number[];
  loadModel(source: ModelFiles, optionsJson: string): Promise<RawModel>;
  /** JSON `{ dir, task, numLabels, type, name }` of the adapter saved at `dir` (or in `dir/adapter`). */
  savedAdapter(dir: string): string;
  /** JSON `{ task, modelOptions }`: how to load the model at `modelPath` to train it with `{ task?, data }`. */
  trainingSetup(modelPath: string, optionsJson: string): string;
  /** How many CUDA GPUs this backend can use (0 but for the CUDA addon on a machine with a GPU). */
  cudaDeviceCount(): number;
}

/**
 * wasm-bindgen declares most results `any`, so assigning a `WasmLayer` to `RawLayer` checks the
 * arguments but not the results, and would accept a method that takes fewer arguments than
 * napi's. This names any method whose argument count differs between the two (tsc: "Type
 * '"forward"' does not satisfy the constraint 'never'").
 */
type Arity<F> = F extends (...args: infer A) => unknown ? A['length'] : never;
type SameType<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type ArityMismatch<N, W> = {
  [K in keyof N & keyof W]: SameType<Arity<N[K]>, Arity<W[K]>> extends true ? never : K;
}[keyof N & keyof W];
type AssertNever<T extends never> = T;
type _LayerArityCheck = AssertNever<ArityMismatch<Native.NativeLayer, Wasm.WasmLayer>>;

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

function nativeTriple(): string {
  const { platform, arch } = process;
  if (platform !== 'linux') return `${platform}-${arch}`;
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return `linux-${arch}-${header?.glibcVersionRuntime ? 'gnu' : 'musl'}`;
}

/** Await a backend promise, rethrowing its failure as a `KronLoraError`. */
async function settle<T>(promise: () => Promise<T>): Promise<T> {
  try {
    return await promise();
  } catch (error) {
    throw fromBackendError(error);
  }
}

/** The CUDA addon: `KRONLORA_CUDA_ADDON` if set (a path), else the one `npm run build:cuda` writes. */
export function cudaAddonPath(): string {
  return process.env.KRONLORA_CUDA_ADDON || join(packageRoot, 'native', `kronlora.${nativeTriple()}.cuda.node`);
}

/**
 * candle runs its element-wise ops (residual adds, every gradient accumulation in backward) on
 * a pool of its own besides kronlora's, whose threads busy-wait 25 000 `pause`s after each op
 * before sleeping (`CANDLE_BARRIER_POOL_SPIN_LIMIT`, read once, when candle first needs the
 * pool). A training step runs hundreds of such ops between GEMMs, so on a machine with as many
 * cores as threads the spinning thread takes CPU from the GEMM that follows: a MiniLM step was
 * ~6 % faster with it off (README, issue 11). Parking at once costs a futex wake per op instead.
 * Set here, before the addon loads, through Node's own environment (a Rust `set_var` would race
 * with other threads' `getenv`); a value the user set is kept.
 */
function quietCandleThreads(): void {
  process.env.CANDLE_BARRIER_POOL_SPIN_LIMIT ??= '0';
}

function loadNative(): Binding {
  const file = join(packageRoot, 'native', `kronlora.${nativeTriple()}.node`);
  if (!existsSync(file)) throw new Error(`${file} does not exist (build it with \`npm run build\`)`);
  quietCandleThreads();
  return nativeBinding('native', require(file) as typeof Native);
}

/**
 * The CUDA addon is built with candle's `cuda` feature, which links the driver, cuBLAS, cuRAND
 * and NVRTC: on a machine without them `require` fails (dlopen names the missing library), and
 * with them but no GPU it loads and counts none. Either way it is not used.
 */
function loadCuda(): Binding {
  const file = cudaAddonPath();
  if (!existsSync(file)) throw new Error(`${file} does not exist (build it with \`npm run build:cuda\`)`);
  quietCandleThreads();
  const binding = nativeBinding('cuda', require(file) as typeof Native);
  if (binding.cudaDeviceCount() === 0) {
    throw new Error(`${file} loaded but sees no GPU (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides them)`);
  }
  return binding;
}

function nativeBinding(name: 'native' | 'cuda', mod: typeof Native): Binding {
  const wrap = (m: Native.NativeModel): RawModel => ({
    describe: () => settle(async () => m.describe()),
    addAdapter: (name, json) => settle(async () => m.addAdapter(name, json)),
    embed: (texts, json) => settle(() => m.embed(texts, json)),
    logits: (texts, json) => settle(() => m.logits(texts, json)),
    classify: (texts, json) => settle(() => m.classify(texts, json)),
    generate: (prompt, json) => settle(() => m.generate(prompt, json)),
    train: async (json) => {
      const run = await settle(async () => m.train(json));
      return { next: () => settle(() => run.next()), finish: () => settle(() => run.finish()), cancel: () => run.cancel() };
    },
    evaluate: (data, json) => settle(() => m.evaluate(data, json)),
    saveAdapter: (dir, name) => settle(() => m.saveAdapter(dir, name ?? null)),
    exportAdapter: (path, json) => settle(() => m.exportAdapter(path, json)),
    saveMerged: (path) => settle(() => m.saveMerged(path)),
    loadAdapter: (dir, json) => settle(() => m.loadAdapter(dir, json)),
    setActiveAdapters: (json) => settle(() => m.setActiveAdapters(json)),
    deleteAdapter: (name) => settle(() => m.deleteAdapter(name)),
    mergeAdapters: () => settle(() => m.mergeAdapters()),
    unmergeAdapters: () => settle(() => m.unmergeAdapters()),
    dispose: () => {},
  });
  return {
    name,
    createLayer: (kind, json, weight, bias) => new mod.NativeLayer(kind, json, weight, bias),
    factorization: (dim, factor) => mod.factorization(dim, factor),
    savedAdapter: (dir) => mod.savedAdapter(dir),
    trainingSetup: (modelPath, json) => mod.trainingSetup(modelPath, json),
    cudaDeviceCount: () => mod.cudaDeviceCount(),
    loadModel: async (source, json) => {
      if (typeof source !== 'string') {
        throw new KronLoraError('ERR_UNSUPPORTED', 'the native backend loads models from a path; file bytes are for the WASM backend');
      }
      return wrap(await settle(() => mod.loadModel(source, json)));
    },
  };
}

function loadWasm(): Binding {
  const file = join(packageRoot, 'wasm', 'kronlora_wasm.js');
  if (!existsSync(file)) throw new Error(`${file} does not exist (build it with \`npm run build\`)`);
  const mod = require(file) as typeof Wasm;
  // Layers are small and synchronous here; models live in a worker thread.
  const host = new WasmHost(file);
  const wrap = (model: number): RawModel => {
    // `WasmModel`'s methods by name, with their declared arguments (less the storage, which the
    // worker adds) and results.
    const call = <M extends WasmMethod>(method: M, ...args: WasmArgs<M>) =>
      host.request<ReturnType<Wasm.WasmModel[M]>>({ op: 'call', model, method, args });
    return {
      describe: () => call('describe'),
      addAdapter: (name, json) => call('addAdapter', name, json),
      embed: (texts, json) => call('embed', texts, json),
      logits: (texts, json) => call('logits', texts, json),
      classify: (texts, json) => call('classify', texts, json),
      generate: (prompt, json) => call('generate', prompt, json),
      train: async (optionsJson) => wasmTraining(host, model, optionsJson),
      evaluate: (data, json) => call('evaluate', data, json),
      saveAdapter: (dir, name) => call('saveAdapter', dir, name ?? null),
      exportAdapter: (path, json) => call('exportAdapter', path, json),
      saveMerged: (path) => call('saveMerged', path),
      loadAdapter: (dir, json) => call('loadAdapter', dir, json),
      setActiveAdapters: (json) => call('setActiveAdapters', json),
      deleteAdapter: (name) => call('deleteAdapter', name),
      mergeAdapters: () => call('mergeAdapters'),
      unmergeAdapters: () => call('unmergeAdapters'),
      dispose: () => void host.request({ op: 'free', model }).catch(() => {}),
    };
  };
  return {
    name: 'wasm',
    createLayer: (kind, json, weight, bias) => new mod.WasmLayer(kind, json, weight, bias),
    // A `Uint32Array` from wasm-bindgen.
    factorization: (dim, factor) => Array.from(mod.factorization(dim, factor)),
    // These read a few small files on this thread, through the same storage as the worker.
    savedAdapter: (dir) => mod.savedAdapter(dir, nodeStorage),
    trainingSetup: (modelPath, json) => mod.trainingSetup(modelPath, json, nodeStorage),
    cudaDeviceCount: () => mod.cudaDeviceCount(),
    loadModel: async (source, optionsJson) => {
      const files = typeof source === 'string' ? { path: source } : { files: source };
      return wrap(await host.request<number>({ op: 'load', ...files, optionsJson }));
    },
  };
}

/**
 * Training in the WASM worker: it trains synchronously, so events arrive as messages while it
 * runs and cancellation goes through a shared flag it reads before each record of the data and
 * after every step.
 */
function wasmTraining(host: WasmHost, model: number, optionsJson: string): RawTraining {
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const queue: (string | null)[] = [];
  const waiting: ((e: string | null) => void)[] = [];
  const push = (e: string | null) => {
    const w = waiting.shift();
    if (w) w(e);
    else queue.push(e);
  };
  const done = host.stream<string>({ op: 'train', model, optionsJson, flag }, (event) => push(event as string));
  const finished = done.finally(() => push(null));
  finished.catch(() => {});
  return {
    next: () => (queue.length ? Promise.resolve(queue.shift()!) : new Promise((resolve) => waiting.push(resolve))),
    finish: () => done,
    cancel: () => Atomics.store(flag, 0, 1),
  };
}

const loaders: Record<BackendName, () => Binding> = { native: loadNative, cuda: loadCuda, wasm: loadWasm };
const loaded = new Map<BackendName, Binding>();

/** Load one backend by name (cached), or throw a `KronLoraError` saying why it is unavailable. */
export function loadBackend(name: BackendName): Binding {
  const cached = loaded.get(name);
  if (cached) return cached;
  const loader = loaders[name];
  if (!loader) {
    throw new KronLoraError('ERR_BACKEND', `unknown backend "${String(name)}"; use "native", "cuda" or "wasm"`);
  }
  try {
    const binding = loader();
    loaded.set(name, binding);
    return binding;
  } catch (error) {
    throw new KronLoraError(
      'ERR_BACKEND',
      `the ${name} backend could not be loaded: ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    );
  }
}

let chosen: Binding | undefined;

/** `KRONLORA_BACKEND`, checked; undefined when unset. */
function forcedBackend(): BackendName | undefined {
  const forced = process.env.KRONLORA_BACKEND?.trim();
  if (!forced) return undefined;
  if (forced !== 'native' && forced !== 'cuda' && forced !== 'wasm') {
    throw new KronLoraError('ERR_BACKEND', `KRONLORA_BACKEND must be "native", "cuda" or "wasm", got "${forced}"`);
  }
  return forced;
}

/**
 * `KRONLORA_DEVICE`, checked; undefined when unset. When set it overrides every model's `device`
 * option, so a program written for a GPU runs on the CPU (or the other way) unchanged.
 */
export function deviceOverride(): string | undefined {
  const device = process.env.KRONLORA_DEVICE?.trim();
  if (!device) return undefined;
  if (!/^(cpu|auto|cuda|cuda:\d+)$/.test(device)) {
    throw new KronLoraError('ERR_INVALID_OPTION', `KRONLORA_DEVICE must be "cpu", "cuda", "cuda:N" or "auto", got "${device}"`);
  }
  return device;
}

/** The backend in use: `KRONLORA_BACKEND` if set, else native, falling back to WASM. */
export function defaultBinding(): Binding {
  if (chosen) return chosen;
  const forced = forcedBackend();
  if (forced) {
    chosen = loadBackend(forced);
  } else {
    try {
      chosen = loadBackend('native');
    } catch {
      chosen = loadBackend('wasm');
    }
  }
  return chosen;
}

let warnedCuda = false;

/**
 * The backend a model on `device` runs on: the CUDA addon for `cuda`, `cuda:N` and (when it
 * loads and sees a GPU) `auto`, else the default backend. `auto` without a usable CUDA addon
 * falls back to the CPU, with one warning per process when an addon exists but cannot be used
 * (none when no CUDA addon is installed: that is the CPU-only setup, not a fault);
 * an explicit `cuda` fails with the reason instead.
 */
export function bindingForDevice(device: string | undefined): Binding {
  const forced = forcedBackend();
  if (forced || device === undefined || !/^(auto|cuda|cuda:\d+)$/.test(device)) {
    // `cpu`, and names the core rejects with the list of accepted ones.
    return defaultBinding();
  }
  try {
    return loadBackend('cuda');
  } catch (error) {
    const reason = error instanceof KronLoraError && error.cause instanceof Error ? error.cause.message : String(error);
    if (device !== 'auto') {
      throw new KronLoraError('ERR_UNSUPPORTED', `device "${device}" needs the CUDA addon, which cannot be used: ${reason}`, {
        cause: error,
      });
    }
    if (!warnedCuda && existsSync(cudaAddonPath())) {
      warnedCuda = true;
      process.emitWarning(`kronlora: device "auto" runs on the CPU: the CUDA addon cannot be used: ${reason}`, {
        code: 'KRONLORA_NO_CUDA',
      });
    }
    return defaultBinding();
  }
}
