/**
 * kronlora: Kron-LoRA (`ΔW = A ⊗ (B1·B2)`) and LoRA adapters with a Rust core.
 *
 * Everything here runs on the backend `backend()` names (native addon, or WASM as fallback; the
 * CUDA build of the addon for models on a GPU);
 * `withBackend(name)` gives the same API pinned to one backend.
 */
import { bindingForDevice, defaultBinding, deviceOverride, loadBackend } from './backend.js';
import type { BackendName, Binding, ModelFiles } from './binding.js';
import { call } from './errors.js';
import { layersOn } from './layers.js';
import { type Device, type LoadModelOptions, Model } from './model.js';

export * from './model-api.js';
export type { BackendName, ModelFiles } from './binding.js';
export { KronLoraLinear, LoraLinear } from './layers.js';
export type { KronLoraOptions, LayerOptions, LoraExport, Tensor } from './layers.js';

function factorizationOn(binding: Binding, dim: number, factor: number): [number, number] {
  const [m, n] = call(() => binding.factorization(dim, factor));
  return [m, n];
}

/**
 * LyCORIS' `factorization`: split `dim` into `[m, n]`, `m ≤ n`, with `m = factor` when it
 * divides `dim`, else the divisor `m ≤ factor` closest to √dim (`factor = -1`: unlimited).
 */
export function factorization(dim: number, factor = -1): [number, number] {
  return factorizationOn(defaultBinding(), dim, factor);
}

/**
 * The backend `loadModel` uses for a model without a `device` option: `'native'`, `'wasm'`, or
 * `'cuda'` (the CUDA addon, when `KRONLORA_DEVICE` asks for a GPU). `KRONLORA_BACKEND` forces one.
 * A model's own `backend` and `device` say where it runs.
 */
export function backend(): BackendName {
  return bindingForDevice(deviceOverride()).name;
}

/** The whole API pinned to one backend, e.g. to compare native and WASM in one process. */
export function withBackend(name: BackendName) {
  const binding = loadBackend(name);
  return {
    ...layersOn(binding),
    factorization: (dim: number, factor = -1) => factorizationOn(binding, dim, factor),
    backend: (): BackendName => binding.name,
    loadModel: (source: ModelFiles, options?: LoadModelOptions) => Model.create(binding, source, withDeviceOverride(options)),
  };
}

/** `options` with `KRONLORA_DEVICE`, when set, as its `device`. */
function withDeviceOverride(options: LoadModelOptions | undefined): LoadModelOptions | undefined {
  const device = deviceOverride() as Device | undefined;
  if (device === undefined) return options;
  if (options === undefined) return { device };
  // Anything else Model.create refuses with its own message.
  if (typeof options !== 'object' || options === null) return options;
  return { ...options, device };
}

/**
 * Load a Hugging Face model directory (`config.json`, `model.safetensors` or shards,
 * `tokenizer.json`) or a llama.cpp `.gguf` file. On the WASM backend the files may also be given
 * as bytes: `{ 'config.json': Uint8Array, ... }` (in a browser: `kronlora/browser`).
 */
export function loadModel(source: ModelFiles, options?: LoadModelOptions): Promise<Model> {
  const resolved = withDeviceOverride(options);
  return Model.create(bindingForDevice(resolved?.device), source, resolved);
}
