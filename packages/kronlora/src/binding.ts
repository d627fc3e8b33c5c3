/**
 * What every backend offers, as plain types with no Node imports: the native addon (napi-rs),
 * its CUDA build and the WASM core (in a Node worker thread or a browser Web Worker) all
 * implement `Binding` / `RawModel`, so `Model` and `TrainingRun` serve them all unchanged.
 *
 * The bindings' own types are the declarations their builds generate from the Rust signatures
 * (napi-rs: native/native.d.ts, wasm-bindgen: wasm/kronlora_wasm.d.ts; scripts/build.sh writes
 * both before tsc runs). The imports are type-only, so nothing here loads them.
 */
import type * as Native from '../native/native.js';

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
