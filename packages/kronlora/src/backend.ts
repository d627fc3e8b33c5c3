/**
 * Backend selection: the native addon (napi-rs) when it loads, the WASM build otherwise.
 * `KRONLORA_BACKEND=native|wasm` forces one. Both expose the same raw interface below.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { KronLoraError, fromBackendError } from './errors.js';
import { WasmHost } from './wasm-host.js';

export type BackendName = 'native' | 'wasm';

/** A tensor as the bindings pass it. */
export interface RawNamedTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** What `NativeLayer` (napi) and `WasmLayer` (wasm-bindgen) both implement. */
export interface RawLayer {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly numTrainableParameters: number;
  readonly merged: boolean;
  forward(x: Float32Array, rows: number): Float32Array;
  gradients(x: Float32Array, rows: number, gradOutput: Float32Array): { parameters: RawNamedTensor[]; input: RawNamedTensor };
  getParameters(): RawNamedTensor[];
  setParameters(values: RawNamedTensor[]): void;
  deltaWeight(): RawNamedTensor;
  weight(): RawNamedTensor | null | undefined;
  merge(): void;
  unmerge(): void;
  toLora(): { loraA: RawNamedTensor; loraB: RawNamedTensor; rank: number; alpha: number };
  free?(): void;
}

export type AdapterType = 'kron-lora' | 'lora';

/** Row-major rows × width floats. */
export interface FloatRows {
  data: Float32Array;
  width: number;
}

/** What both bindings' models offer, all asynchronous (native: libuv pool; WASM: a worker). */
export interface RawModel {
  describe(): Promise<string>;
  addAdapter(name: string, optionsJson: string): Promise<number>;
  embed(texts: string[]): Promise<FloatRows>;
  logits(texts: string[]): Promise<FloatRows>;
  classify(texts: string[]): Promise<string>;
  generate(prompt: string, maxTokens: number, temperature: number, seed: number): Promise<string>;
  /** Start training; events and the result come through the handle. */
  train(optionsJson: string): Promise<RawTraining>;
  evaluate(dataJson: string, optionsJson: string): Promise<string>;
  saveAdapter(dir: string, name?: string): Promise<void>;
  loadAdapter(dir: string, name?: string): Promise<number>;
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
  /** JSON `{ records, labels, numLabels }` of classification file contents. */
  labelSummary(text: string, name: string): string;
  /** JSON `{ task, numLabels, type, name }` of an `adapter_config.json`'s text. */
  adapterConfigSummary(text: string, path: string): string;
}

type LayerClass = new (kind: string, json: string, weight?: Float32Array, bias?: Float32Array) => RawLayer;
interface RawModule {
  factorization(dim: number, factor: number): number[];
  labelSummary(text: string, name: string): string;
  adapterConfigSummary(text: string, path: string): string;
}

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

function nativeTriple(): string {
  const { platform, arch } = process;
  if (platform !== 'linux') return `${platform}-${arch}`;
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return `linux-${arch}-${header?.glibcVersionRuntime ? 'gnu' : 'musl'}`;
}

interface NativeModel {
  describe(): string;
  addAdapter(name: string, json: string): number;
  embed(texts: string[]): Promise<FloatRows>;
  logits(texts: string[]): Promise<FloatRows>;
  classify(texts: string[]): Promise<string>;
  generate(prompt: string, maxTokens: number, temperature: number, seed: number): Promise<string>;
  train(optionsJson: string): RawTraining;
  evaluate(dataJson: string, optionsJson: string): Promise<string>;
  saveAdapter(dir: string, name?: string | null): Promise<void>;
  loadAdapter(dir: string, name?: string | null): Promise<number>;
}

/** Await a backend promise, rethrowing its failure as a `KronLoraError`. */
async function settle<T>(promise: () => Promise<T>): Promise<T> {
  try {
    return await promise();
  } catch (error) {
    throw fromBackendError(error);
  }
}

function loadNative(): Binding {
  const file = join(packageRoot, 'native', `kronlora.${nativeTriple()}.node`);
  if (!existsSync(file)) throw new Error(`${file} does not exist (build it with \`npm run build\`)`);
  const mod = require(file) as RawModule & {
    NativeLayer: LayerClass;
    loadModel(path: string, json: string): Promise<NativeModel>;
  };
  const wrap = (m: NativeModel): RawModel => ({
    describe: () => settle(async () => m.describe()),
    addAdapter: (name, json) => settle(async () => m.addAdapter(name, json)),
    embed: (texts) => settle(() => m.embed(texts)),
    logits: (texts) => settle(() => m.logits(texts)),
    classify: (texts) => settle(() => m.classify(texts)),
    generate: (prompt, maxTokens, temperature, seed) => settle(() => m.generate(prompt, maxTokens, temperature, seed)),
    train: async (json) => {
      const run = await settle(async () => m.train(json));
      return { next: () => settle(() => run.next()), finish: () => settle(() => run.finish()), cancel: () => run.cancel() };
    },
    evaluate: (data, json) => settle(() => m.evaluate(data, json)),
    saveAdapter: (dir, name) => settle(() => m.saveAdapter(dir, name ?? null)),
    loadAdapter: (dir, name) => settle(() => m.loadAdapter(dir, name ?? null)),
    dispose: () => {},
  });
  return {
    name: 'native',
    createLayer: (kind, json, weight, bias) => new mod.NativeLayer(kind, json, weight, bias),
    factorization: (dim, factor) => mod.factorization(dim, factor),
    labelSummary: (text, name) => mod.labelSummary(text, name),
    adapterConfigSummary: (text, path) => mod.adapterConfigSummary(text, path),
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
  const mod = require(file) as RawModule & { WasmLayer: LayerClass };
  // Layers are small and synchronous here; models live in a worker thread.
  const host = new WasmHost(file);
  const wrap = (model: number): RawModel => {
    const call = <T>(method: string, ...args: unknown[]) => host.request<T>({ op: 'call', model, method, args });
    return {
      describe: () => call<string>('describe'),
      addAdapter: (name, json) => call<number>('addAdapter', name, json),
      embed: (texts) => call<FloatRows>('embed', texts),
      logits: (texts) => call<FloatRows>('logits', texts),
      classify: (texts) => call<string>('classify', texts),
      generate: (prompt, maxTokens, temperature, seed) => call<string>('generate', prompt, maxTokens, temperature, seed),
      train: async (optionsJson) => wasmTraining(host, model, optionsJson),
      evaluate: (data, json) => call<string>('evaluate', data, json),
      saveAdapter: (dir, name) => call<void>('saveAdapter', dir, name ?? null),
      loadAdapter: (dir, name) => call<number>('loadAdapter', dir, name ?? null),
      dispose: () => void host.request({ op: 'free', model }).catch(() => {}),
    };
  };
  return {
    name: 'wasm',
    createLayer: (kind, json, weight, bias) => new mod.WasmLayer(kind, json, weight, bias),
    factorization: (dim, factor) => mod.factorization(dim, factor),
    labelSummary: (text, name) => mod.labelSummary(text, name),
    adapterConfigSummary: (text, path) => mod.adapterConfigSummary(text, path),
    loadModel: async (source, optionsJson) => {
      const message = typeof source === 'string' ? { op: 'load', path: source, optionsJson } : { op: 'load', files: source, optionsJson };
      return wrap(await host.request<number>(message));
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

const loaders: Record<BackendName, () => Binding> = { native: loadNative, wasm: loadWasm };
const loaded = new Map<BackendName, Binding>();

/** Load one backend by name (cached), or throw a `KronLoraError` saying why it is unavailable. */
export function loadBackend(name: BackendName): Binding {
  const cached = loaded.get(name);
  if (cached) return cached;
  const loader = loaders[name];
  if (!loader) {
    throw new KronLoraError('ERR_BACKEND', `unknown backend "${String(name)}"; use "native" or "wasm"`);
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

/** The backend in use: `KRONLORA_BACKEND` if set, else native, falling back to WASM. */
export function defaultBinding(): Binding {
  if (chosen) return chosen;
  const forced = process.env.KRONLORA_BACKEND?.trim();
  if (forced) {
    if (forced !== 'native' && forced !== 'wasm') {
      throw new KronLoraError('ERR_BACKEND', `KRONLORA_BACKEND must be "native" or "wasm", got "${forced}"`);
    }
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
