/**
 * Backend selection: the native addon (napi-rs) when it loads, the WASM build otherwise.
 * `KRONLORA_BACKEND=native|wasm` forces one. Both expose the same raw interface below.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { KronLoraError } from './errors.js';

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

export interface Binding {
  readonly name: BackendName;
  createLayer(kind: AdapterType, optionsJson: string, weight?: Float32Array, bias?: Float32Array): RawLayer;
  factorization(dim: number, factor: number): number[];
}

type LayerClass = new (kind: string, json: string, weight?: Float32Array, bias?: Float32Array) => RawLayer;
interface RawModule {
  factorization(dim: number, factor: number): number[];
}

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

function nativeTriple(): string {
  const { platform, arch } = process;
  if (platform !== 'linux') return `${platform}-${arch}`;
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return `linux-${arch}-${header?.glibcVersionRuntime ? 'gnu' : 'musl'}`;
}

function loadNative(): Binding {
  const file = join(packageRoot, 'native', `kronlora.${nativeTriple()}.node`);
  if (!existsSync(file)) throw new Error(`${file} does not exist (build it with \`npm run build\`)`);
  const mod = require(file) as RawModule & { NativeLayer: LayerClass };
  return {
    name: 'native',
    createLayer: (kind, json, weight, bias) => new mod.NativeLayer(kind, json, weight, bias),
    factorization: (dim, factor) => mod.factorization(dim, factor),
  };
}

function loadWasm(): Binding {
  const file = join(packageRoot, 'wasm', 'kronlora_wasm.js');
  if (!existsSync(file)) throw new Error(`${file} does not exist (build it with \`npm run build\`)`);
  const mod = require(file) as RawModule & { WasmLayer: LayerClass };
  return {
    name: 'wasm',
    createLayer: (kind, json, weight, bias) => new mod.WasmLayer(kind, json, weight, bias),
    factorization: (dim, factor) => mod.factorization(dim, factor),
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
