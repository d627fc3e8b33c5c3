/**
 * `KronLoraLinear` and `LoraLinear`: a frozen linear layer with one adapter. All numerics run in
 * the Rust core; this file checks JavaScript argument types and converts results.
 */
import type { Device } from './model.js';
import { defaultBinding } from './backend.js';
import type { AdapterType, Binding, RawLayer, RawNamedTensor } from './binding.js';
import { KronLoraError, call } from './errors.js';

/** A dense row-major tensor. */
export interface Tensor {
  shape: number[];
  data: Float32Array;
}

/** Options shared by both layer types. Unknown names are rejected. */
export interface LayerOptions {
  /** Input width (columns of the base weight). */
  inFeatures: number;
  /** Output width (rows of the base weight). */
  outFeatures: number;
  /** Adapter rank `r`. */
  rank: number;
  /** Scale numerator: the update is multiplied by `alpha / rank` (or `alpha / √rank` with rsLoRA). */
  alpha: number;
  /** Seed of the initialisation (default 0): the same seed gives the same factors on every backend. */
  seed?: number;
  /** Scale by `alpha / √rank` (rsLoRA) instead of `alpha / rank`. */
  useRslora?: boolean;
  /** Frozen base weight, row-major `[outFeatures, inFeatures]`. Without it the layer computes the update alone. */
  weight?: Float32Array;
  /** Frozen bias `[outFeatures]` (needs `weight`). */
  bias?: Float32Array;
  /** Name used in error messages. */
  name?: string;
  /** Where the layer's tensors live (default `cpu`); see `LoadModelOptions.device`. */
  device?: Device;
}

export interface KronLoraOptions extends LayerOptions {
  /** `d_A1`, the outer factor of `inFeatures` (default 2, or the closest smaller divisor). */
  kronIn?: number;
  /** `d_A2`, the outer factor of `outFeatures` (default 4, or the closest smaller divisor). */
  kronOut?: number;
}

/** A Kron-LoRA update written as plain LoRA: `ΔW = (alpha / rank) · loraB · loraA`. */
export interface LoraExport {
  loraA: Tensor;
  loraB: Tensor;
  rank: number;
  alpha: number;
}

function toTensor(t: RawNamedTensor): Tensor {
  return { shape: Array.from(t.shape), data: t.data };
}

function typeError(message: string): KronLoraError {
  return new KronLoraError('ERR_INVALID_ARG_TYPE', message);
}

function checkArray(what: string, value: unknown): Float32Array {
  if (!(value instanceof Float32Array)) {
    throw typeError(`${what} must be a Float32Array, got ${value === null ? 'null' : typeof value}`);
  }
  return value;
}

function checkRows(rows: unknown): number {
  if (typeof rows !== 'number' || !Number.isInteger(rows) || rows < 1 || rows > 0xffffffff) {
    throw new KronLoraError('ERR_INVALID_OPTION', `rows must be a positive integer, got ${String(rows)}`);
  }
  return rows;
}

/** JSON that keeps NaN and ±Infinity visible to the core's checks (JSON would turn them into null). */
function optionsJson(options: object): string {
  return JSON.stringify(options, (_key, value) => (typeof value === 'number' && !Number.isFinite(value) ? String(value) : value));
}

/** The base class of both layer types; not exported as such. */
abstract class AdaptedLinear {
  /** Set on classes returned by `withBackend()`; otherwise the default backend is used. */
  protected static binding?: Binding;
  protected readonly raw: RawLayer;
  /** The backend this layer lives on. */
  readonly backend: Binding['name'];

  protected constructor(kind: AdapterType, options: LayerOptions) {
    if (typeof options !== 'object' || options === null || Array.isArray(options)) {
      throw typeError(`options must be an object like { inFeatures, outFeatures, rank, alpha }, got ${String(options)}`);
    }
    const { weight, bias, ...rest } = options;
    if (weight !== undefined) checkArray('options.weight', weight);
    if (bias !== undefined) checkArray('options.bias', bias);
    const binding = (new.target as unknown as typeof AdaptedLinear).binding ?? defaultBinding();
    this.backend = binding.name;
    this.raw = call(() => binding.createLayer(kind, optionsJson(rest), weight, bias));
  }

  get inFeatures(): number {
    return this.raw.inFeatures;
  }
  get outFeatures(): number {
    return this.raw.outFeatures;
  }
  /** Number of trainable adapter parameters. */
  get numTrainableParameters(): number {
    return this.raw.numTrainableParameters;
  }
  /** Whether the update is currently folded into the base weight. */
  get merged(): boolean {
    return this.raw.merged;
  }

  /** `x` is `rows × inFeatures`, row-major; returns `rows × outFeatures`. */
  forward(x: Float32Array, rows: number): Float32Array {
    checkArray('x', x);
    checkRows(rows);
    return call(() => this.raw.forward(x, rows));
  }

  /**
   * Gradients of `sum(forward(x) ⊙ gradOutput)` with respect to every trainable parameter and
   * to `x` (key `x`). After `merge()` the adapter is not trained, so only `x` is returned.
   */
  gradients(x: Float32Array, rows: number, gradOutput: Float32Array): Record<string, Tensor> {
    checkArray('x', x);
    checkRows(rows);
    checkArray('gradOutput', gradOutput);
    const g = call(() => this.raw.gradients(x, rows, gradOutput));
    const out: Record<string, Tensor> = {};
    for (const p of g.parameters) out[p.name] = toTensor(p);
    out.x = toTensor(g.input);
    return out;
  }

  /** The trainable parameters by name. */
  getParameters(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const p of call(() => this.raw.getParameters())) out[p.name] = toTensor(p);
    return out;
  }

  /** Replace some or all parameters; shapes must match. Nothing changes if any value is invalid. */
  setParameters(values: Record<string, Tensor>): void {
    if (typeof values !== 'object' || values === null) throw typeError('setParameters expects an object of { shape, data }');
    const list: RawNamedTensor[] = Object.entries(values).map(([name, t]) => {
      if (typeof t !== 'object' || t === null || !Array.isArray(t.shape)) {
        throw typeError(`parameter ${name} must be { shape: number[], data: Float32Array }`);
      }
      return { name, shape: t.shape, data: checkArray(`parameter ${name}.data`, t.data) };
    });
    call(() => this.raw.setParameters(list));
  }

  /** The update `s·ΔW`, `[outFeatures, inFeatures]`. */
  deltaWeight(): Tensor {
    return toTensor(call(() => this.raw.deltaWeight()));
  }

  /** The base weight as it is now (including the update while merged), or null without one. */
  weight(): Tensor | null {
    const w = call(() => this.raw.weight());
    return w ? toTensor(w) : null;
  }

  /** Fold the update into the base weight (no adapter cost at inference). */
  merge(): void {
    call(() => this.raw.merge());
  }

  /** Restore the base weight exactly as it was before `merge()`. */
  unmerge(): void {
    call(() => this.raw.unmerge());
  }

  /** Release the backend memory now instead of at garbage collection. */
  dispose(): void {
    this.raw.free?.();
  }
}

/** A frozen linear layer with a Kron-LoRA adapter: `ΔW = A ⊗ (B1·B2)`. Parameters `A`, `B1`, `B2`. */
export class KronLoraLinear extends AdaptedLinear {
  constructor(options: KronLoraOptions) {
    super('kron-lora', options);
  }

  /** The exact plain-LoRA form of the update (rank `d_A1·r`), for any LoRA consumer. */
  toLora(): LoraExport {
    const l = call(() => this.raw.toLora());
    return { loraA: toTensor(l.loraA), loraB: toTensor(l.loraB), rank: l.rank, alpha: l.alpha };
  }
}

/** A frozen linear layer with a LoRA adapter: `ΔW = B·A`. Parameters `lora_A`, `lora_B`. */
export class LoraLinear extends AdaptedLinear {
  constructor(options: LayerOptions) {
    super('lora', options);
  }
}

/** Subclasses of the two layer types pinned to one backend. */
export function layersOn(binding: Binding): { KronLoraLinear: typeof KronLoraLinear; LoraLinear: typeof LoraLinear } {
  return {
    KronLoraLinear: class extends KronLoraLinear {
      protected static override binding = binding;
    },
    LoraLinear: class extends LoraLinear {
      protected static override binding = binding;
    },
  };
}
