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
import type { BackendName, Binding, RawModel } from './binding.js';
import type * as Wasm from '../wasm/kronlora_wasm.js';
import { KronLoraError, fromBackendError } from './errors.js';
import { missingCpuFeatures } from './cpu-support.js';
import { nodeStorage } from './node-storage.js';
import { WasmHost } from './wasm-host.js';
import { wasmRawModel } from './wasm-client.js';

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

/** napi-rs' platform name (`linux-x64-gnu`). */
function platformTriple(): string {
  const { platform, arch } = process;
  if (platform !== 'linux') return `${platform}-${arch}`;
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return `linux-${arch}-${header?.glibcVersionRuntime ? 'gnu' : 'musl'}`;
}

let triple: string | undefined;

/** `platformTriple()`, computed once: `process.report.getReport()` builds a whole diagnostic report. */
function nativeTriple(): string {
  triple ??= platformTriple();
  return triple;
}

/** Await a backend promise, rethrowing its failure as a `KronLoraError`. */
async function settle<T>(promise: () => Promise<T>): Promise<T> {
  try {
    return await promise();
  } catch (error) {
    throw fromBackendError(error);
  }
}

/**
 * The CUDA addon: `KRONLORA_CUDA_ADDON` if set (a path), else the one `npm run build:cuda` writes,
 * else the optional package `@kronlora/<triple>-cuda` (`npm run pack` makes it from that build).
 */
export function cudaAddonPath(): string {
  if (process.env.KRONLORA_CUDA_ADDON) return process.env.KRONLORA_CUDA_ADDON;
  const local = join(packageRoot, 'native', `kronlora.${nativeTriple()}.cuda.node`);
  if (existsSync(local)) return local;
  try {
    return require.resolve(`@kronlora/${nativeTriple()}-cuda`);
  } catch {
    return local;
  }
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

/**
 * The native addon for this platform: a local build (`npm run build` in a checkout writes
 * native/), else the per-platform package npm installs beside kronlora from its
 * optionalDependencies (`@kronlora/linux-x64-gnu`, napi-rs' layout; `npm run pack` makes it).
 */
function nativeAddonPath(): string {
  const triple = nativeTriple();
  const local = join(packageRoot, 'native', `kronlora.${triple}.node`);
  if (existsSync(local)) return local;
  try {
    return require.resolve(`@kronlora/${triple}`);
  } catch {
    // In a checkout (src/ is there) the addon comes from a build instead.
    const build = existsSync(join(packageRoot, 'src')) ? ', and native/ holds no build (`npm run build`)' : '';
    throw new Error(`the native package @kronlora/${triple} is not installed${build}`);
  }
}

/** Load an addon (CPU or CUDA build: both are compiled for x86-64-v3), after checking the CPU. */
function requireAddon(name: 'native' | 'cuda', file: string): Binding {
  const missing = missingCpuFeatures();
  if (missing.length) {
    throw new Error(`this CPU lacks ${missing.join(', ')}, which the ${name} addon (built for x86-64-v3) needs`);
  }
  quietCandleThreads();
  return nativeBinding(name, require(file) as typeof Native);
}

function loadNative(): Binding {
  return requireAddon('native', nativeAddonPath());
}

/**
 * The CUDA addon is built with candle's `cuda` feature, which links the driver, cuBLAS, cuRAND
 * and NVRTC: on a machine without them `require` fails (dlopen names the missing library), and
 * with them but no GPU it loads and counts none. Either way it is not used.
 */
function loadCuda(): Binding {
  const file = cudaAddonPath();
  if (!existsSync(file))
    throw new Error(`${file} does not exist (build it with \`npm run build:cuda\`, or install @kronlora/${nativeTriple()}-cuda)`);
  const binding = requireAddon('cuda', file);
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
      return wasmRawModel(host, await host.request<number>({ op: 'load', ...files, optionsJson }));
    },
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
    } catch (error) {
      chosen = loadBackend('wasm');
      // One line (the cause's first), so that a CLI user sees why it is slow, and how to choose it quietly.
      const reason = (error instanceof Error && error.cause instanceof Error ? error.cause.message : String(error)).split('\n')[0];
      process.emitWarning(
        `kronlora runs on the WASM backend, slower than native: ${reason}. KRONLORA_BACKEND=wasm chooses it without this notice.`,
        {
          code: 'KRONLORA_WASM_FALLBACK',
        },
      );
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
