/**
 * `loadModel` and `Model`: a pretrained transformer (BERT-family encoder or Llama-family
 * decoder) with Kron-LoRA / LoRA adapters. Everything runs in the Rust core off the JS thread.
 */
import type { Binding, FloatRows, ModelFiles, RawModel } from './binding.js';
import { KronLoraError } from './errors.js';
import { type EvalMetrics, type DataSource, type TrainOptions, type TrainTask, TrainingRun } from './training.js';

export type Task = 'sequence-classification' | 'causal-lm' | 'embedding';

export interface LoadModelOptions {
  /** Default: `embedding` for encoders, `causal-lm` for decoders. */
  task?: Task;
  /** Classes of the sequence-classification head (default 2). */
  numLabels?: number;
  /** Seed of the classification head's initialisation (default 0). */
  seed?: number;
  /**
   * Where the weights, adapters, batches and optimiser state live: `cpu` (default), `cuda`,
   * `cuda:N`, or `auto` (a GPU when the CUDA addon loads and sees one, else the CPU, with one
   * warning when a CUDA addon is installed but cannot be used). `KRONLORA_DEVICE`, when set,
   * overrides this option.
   */
  device?: Device;
  /**
   * GGUF models only: keep the projections and token embeddings in the file's quantised blocks
   * (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K–Q6_K), QLoRA-style: resident memory about the file's
   * size; adapters train in f32 on top. Default `true` on the CPU (the only device that runs
   * them); `false` dequantises every weight to f32.
   */
  quantized?: boolean;
}

/** A compute device: `cpu`, `cuda` (the first GPU), `cuda:N`, or `auto`. */
export type Device = 'cpu' | 'cuda' | `cuda:${number}` | 'auto';

/** Encoders (BERT family) give hidden states; decoders (Llama family) are causal LMs. */
export type Family = 'encoder' | 'decoder';

/**
 * Options of the inference calls. `adapter`: the adapter(s) this call uses instead of the
 * active ones (each at weight 1; `[]` for the base model alone), leaving the model's own
 * choice as it was.
 */
export interface InferenceOptions {
  adapter?: string | string[];
}

/** An adapter the forward passes use and the weight on its update. */
export interface ActiveAdapter {
  name: string;
  weight: number;
}

/**
 * What `exportAdapter` writes: a PEFT LoRA directory, a GGUF LoRA file for llama.cpp, or a
 * LyCORIS / kohya `.safetensors` file (LoKr for Kron-LoRA).
 */
export type ExportFormat = 'peft-lora' | 'gguf-lora' | 'lycoris';

export interface AdapterConfig {
  type: 'kron-lora' | 'lora';
  rank: number;
  alpha: number;
  /** Kron-LoRA: `d_A1` (default 2, or the nearest smaller divisor of each layer's input width). */
  kronIn?: number;
  /** Kron-LoRA: `d_A2` (default 4, or the nearest smaller divisor of each layer's output width). */
  kronOut?: number;
  /**
   * Module names (`['query', 'value']`: a module matches when its path ends with `.name`), a
   * regular expression over the whole path, or `'all-linear'` (every linear but the output head).
   */
  targetModules: string | string[];
  /** Per-module overrides, keyed by a pattern matched against the end of the module path. */
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  kronInPattern?: Record<string, number>;
  kronOutPattern?: Record<string, number>;
  /** Scale by `alpha/√rank` instead of `alpha/rank`. */
  useRslora?: boolean;
  /** Seed of the initialisation; each module derives its own from it and its path. */
  seed?: number;
  /** Adapter dropout during training (PEFT's `lora_dropout`), in [0, 1); default 0. */
  dropout?: number;
}

/** Like PEFT's `print_trainable_parameters`, broken down by adapter and head. */
export interface TrainableParameters {
  trainable: number;
  total: number;
  percentage: number;
  adapters: Record<string, number>;
  head: number;
  adaptedModules: Record<string, number>;
}

/** A linear projection of the model that adapters can target. */
export interface ModuleInfo {
  /** The module path, e.g. `encoder.layer.0.attention.self.query`. */
  name: string;
  inFeatures: number;
  outFeatures: number;
  /** Names of the adapters on it. */
  adapters: string[];
  /**
   * How the frozen weight is held: `F32`, or the GGUF block type (`Q4_1`, `Q4_K`, `Q8_0`, ...)
   * when a GGUF model keeps it quantised (`loadModel`'s `quantized`).
   */
  weightType: string;
  /** Each adapter's shape here, by name: its rank, and Kron-LoRA's resolved `d_A1` / `d_A2`. */
  factors: Record<string, { rank: number; kronIn?: number; kronOut?: number }>;
}

export interface Classification {
  /** Index of the most likely class. */
  label: number;
  /** Its probability. */
  score: number;
  /** Probabilities of every class. */
  scores: number[];
}

export interface GenerateOptions {
  /** Tokens to generate at most (default 64). */
  maxTokens?: number;
  /** 0 (default) is greedy; higher samples more freely. */
  temperature?: number;
  /** Seed of the sampling (default 0). */
  seed?: number;
}

export interface Generation {
  text: string;
  promptTokens: number;
  generatedTokens: number;
  stoppedAtEos: boolean;
}

function checkTexts(texts: unknown): string[] {
  if (!Array.isArray(texts) || !texts.every((t) => typeof t === 'string')) {
    throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'texts must be an array of strings');
  }
  return texts;
}

function checkData(field: string, data: unknown): void {
  if (typeof data !== 'string' && !Array.isArray(data)) {
    throw new KronLoraError('ERR_INVALID_ARG_TYPE', `${field} must be a path to a .jsonl file or an array of records`);
  }
}

function checkName(options: { name?: string }): string | undefined {
  if (typeof options !== 'object' || options === null)
    throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'options must be an object like { name }');
  const { name, ...unknown } = options;
  const extra = Object.keys(unknown);
  if (extra.length) throw new KronLoraError('ERR_INVALID_OPTION', `unknown option(s) ${extra.join(', ')}; use name`);
  if (name !== undefined && typeof name !== 'string') throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'name must be a string');
  return name;
}

function rows({ data, width }: FloatRows): Float32Array[] {
  const out: Float32Array[] = [];
  for (let i = 0; i < data.length; i += width) out.push(data.subarray(i, i + width));
  return out;
}

/** JSON that keeps NaN and ±Infinity visible to the core's checks. */
function toJson(options: object): string {
  return JSON.stringify(options, (_key, value) => (typeof value === 'number' && !Number.isFinite(value) ? String(value) : value));
}

interface Description {
  architecture: string;
  family: Family;
  task: Task;
  device: string;
  report: TrainableParameters;
  modules: ModuleInfo[];
  labels: string[];
  activeAdapters: ActiveAdapter[];
  merged: boolean;
}

/** The JSON of an inference call's options (`{ adapter? }`), checked by the core. */
function inferenceJson(options: InferenceOptions): string {
  if (typeof options !== 'object' || options === null)
    throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'options must be an object like { adapter }');
  return toJson(options);
}

export class Model {
  private report: TrainableParameters;
  private description: Description;
  /** `encoder` (BERT family) or `decoder` (Llama family). */
  readonly family: Family;
  /** The device the model lives on, e.g. `cpu` or `cuda:0`. */
  readonly device: string;

  private constructor(
    private readonly raw: RawModel,
    /** Architecture summary, e.g. `bert (6 layers, hidden 384)`. */
    readonly architecture: string,
    readonly task: Task,
    /** The backend this model runs on. */
    readonly backend: Binding['name'],
    description: Description,
  ) {
    this.family = description.family;
    this.device = description.device;
    this.description = description;
    this.report = description.report;
  }

  private async refresh(): Promise<void> {
    this.description = JSON.parse(await this.raw.describe());
    this.report = this.description.report;
  }

  /** The linear projections adapters can target, with the adapters each carries. */
  modules(): ModuleInfo[] {
    return structuredClone(this.description.modules);
  }

  /** Class names of a classifier trained (or loaded) with string labels; empty otherwise. */
  labels(): string[] {
    return [...this.description.labels];
  }

  /** @internal */
  static async create(binding: Binding, source: ModelFiles, options: LoadModelOptions = {}): Promise<Model> {
    if (typeof source !== 'string' && (typeof source !== 'object' || source === null)) {
      throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'loadModel expects a path, or an object of file name → Uint8Array');
    }
    if (typeof options !== 'object' || options === null) {
      throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'loadModel options must be an object like { task, numLabels }');
    }
    const raw = await binding.loadModel(source, toJson(options));
    const description: Description = JSON.parse(await raw.describe());
    return new Model(raw, description.architecture, description.task, binding.name, description);
  }

  /** Add an adapter named `name` to the modules `config.targetModules` selects. */
  async addAdapter(name: string, config: AdapterConfig): Promise<{ modules: number }> {
    if (typeof name !== 'string') throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'adapter name must be a string');
    if (typeof config !== 'object' || config === null) {
      throw new KronLoraError(
        'ERR_INVALID_ARG_TYPE',
        "adapter config must be an object like { type: 'kron-lora', rank, alpha, targetModules }",
      );
    }
    const modules = await this.raw.addAdapter(name, toJson(config));
    await this.refresh();
    return { modules };
  }

  /** Trainable and total parameter counts (adapters and head), like PEFT's. */
  trainableParameters(): TrainableParameters {
    return structuredClone(this.report);
  }

  /** Class probabilities of each text (task `sequence-classification`). */
  async classify(texts: string[], options: InferenceOptions = {}): Promise<Classification[]> {
    return JSON.parse(await this.raw.classify(checkTexts(texts), inferenceJson(options)));
  }

  /** Mean-pooled sentence embeddings (encoders). */
  async embed(texts: string[], options: InferenceOptions = {}): Promise<Float32Array[]> {
    return rows(await this.raw.embed(checkTexts(texts), inferenceJson(options)));
  }

  /** Class logits (classification) or the next-token logits after each text (causal LM). */
  async logits(texts: string[], options: InferenceOptions = {}): Promise<Float32Array[]> {
    return rows(await this.raw.logits(checkTexts(texts), inferenceJson(options)));
  }

  /** The adapters forward passes (and training) use now, with the weights on their updates. */
  activeAdapters(): ActiveAdapter[] {
    return structuredClone(this.description.activeAdapters);
  }

  /** Whether the active adapters are merged into the base weights (`mergeAdapters`). */
  get merged(): boolean {
    return this.description.merged;
  }

  /**
   * Use exactly these adapters, their updates summed with `weights` (default 1 each): `[]` runs
   * the base model alone. Training trains the active adapters only. Every adapter added or
   * loaded starts active at weight 1.
   */
  async setActiveAdapters(adapters: string[], options: { weights?: number[] } = {}): Promise<void> {
    if (!Array.isArray(adapters)) throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'setActiveAdapters expects an array of adapter names');
    if (typeof options !== 'object' || options === null)
      throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'setActiveAdapters options must be an object like { weights }');
    await this.raw.setActiveAdapters(toJson({ ...options, adapters }));
    await this.refresh();
  }

  /** Run the base model alone (no adapter active); `setActiveAdapters` brings them back. */
  async disableAdapters(): Promise<void> {
    await this.setActiveAdapters([]);
  }

  /** Remove adapter `name` from the model. */
  async deleteAdapter(name: string): Promise<void> {
    if (typeof name !== 'string') throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'adapter name must be a string');
    await this.raw.deleteAdapter(name);
    await this.refresh();
  }

  /**
   * Fold the active adapters' weighted updates into the base weights: inference then costs what
   * the base model's does. Until `unmergeAdapters`, which restores the weights bit for bit,
   * training and changing or choosing adapters are refused. `adapters` (a name or names) makes
   * those the active ones first, each with weight 1, as `setActiveAdapters` would.
   */
  async mergeAdapters(adapters?: string | string[]): Promise<{ modules: number }> {
    if (adapters !== undefined) await this.setActiveAdapters(typeof adapters === 'string' ? [adapters] : adapters);
    const modules = await this.raw.mergeAdapters();
    await this.refresh();
    return { modules };
  }

  /** Undo `mergeAdapters`: the base weights exactly as they were. */
  async unmergeAdapters(): Promise<{ modules: number }> {
    const modules = await this.raw.unmergeAdapters();
    await this.refresh();
    return { modules };
  }

  /** Continue `prompt` (causal LM): greedy by default, sampled with `temperature > 0`. */
  async generate(prompt: string, options: GenerateOptions & InferenceOptions = {}): Promise<Generation> {
    if (typeof prompt !== 'string') throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'prompt must be a string');
    if (typeof options !== 'object' || options === null) {
      throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'generate options must be an object like { maxTokens, temperature, seed }');
    }
    return JSON.parse(await this.raw.generate(prompt, toJson(options)));
  }

  /**
   * Train the adapters (and the classification head) off the JS thread. Returns at once: iterate
   * the run for events, await `run.result` for the outcome (it rejects with a `KronLoraError`
   * on bad options or data, a non-finite loss, …). The model is busy until the run ends.
   */
  train(options: TrainOptions): TrainingRun {
    if (typeof options !== 'object' || options === null) {
      throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'train options must be an object like { data, epochs, batchSize, learningRate }');
    }
    const { signal, ...rest } = options;
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'signal must be an AbortSignal');
    }
    if (signal?.aborted) throw new KronLoraError('ERR_ABORTED', 'the signal was aborted before training started');
    checkData('data', rest.data);
    if (rest.validationData !== undefined) checkData('validationData', rest.validationData);
    // Training may set label names: refresh what the model describes when it ends.
    return new TrainingRun(this.raw.train(toJson(rest)), signal, () => this.refresh());
  }

  /** Loss and accuracy / perplexity on `data` (a `.jsonl` path or records). */
  async evaluate(
    data: DataSource,
    options: { task?: TrainTask; batchSize?: number; maxLength?: number } & InferenceOptions = {},
  ): Promise<EvalMetrics> {
    checkData('data', data);
    if (typeof options !== 'object' || options === null)
      throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'evaluate options must be an object');
    return JSON.parse(await this.raw.evaluate(JSON.stringify(data), toJson(options)));
  }

  /**
   * Write an adapter (default: the only one) and the trained head to `dir` in PEFT's layout:
   * `adapter_config.json` + `adapter_model.safetensors`. A new directory appears atomically; in an
   * existing one only these two files are replaced (each atomically) and everything else stays.
   * Rejects with `ERR_WOULD_OVERWRITE`, touching nothing, when `dir` is a file or a symbolic link,
   * or holds files of these names that kronlora did not write (e.g. another tool's adapter).
   */
  async saveAdapter(dir: string, options: { name?: string } = {}): Promise<void> {
    if (typeof dir !== 'string' || dir === '') throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'saveAdapter expects a directory path');
    await this.raw.saveAdapter(dir, checkName(options));
  }

  /**
   * Write an adapter (default: the only one) for other tools to serve:
   * - `format: 'peft-lora'`: a PEFT LoRA directory (`PeftModel.from_pretrained` loads it). A
   *   Kron-LoRA adapter is written as the plain LoRA it exactly is, of rank `kronIn·r` per module
   *   (`rank_pattern` where modules differ), with the trained head as `modules_to_save`.
   * - `format: 'gguf-lora'`: one GGUF LoRA file in llama.cpp's names and layout, for a
   *   Llama-family model; llama.cpp and node-llama-cpp apply it to the GGUF base at scale 1.
   * - `format: 'lycoris'`: one `.safetensors` file in LyCORIS / kohya keys: Kron-LoRA as LoKr
   *   (`lokr_w1`, `lokr_w2_a`, `lokr_w2_b`, `alpha`), LoRA as `lora_down` / `lora_up`.
   * Written atomically; rejects with `ERR_WOULD_OVERWRITE`, touching nothing, where files are in
   * the way that kronlora did not write.
   */
  async exportAdapter(path: string, options: { format: ExportFormat; name?: string }): Promise<void> {
    if (typeof path !== 'string' || path === '') throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'exportAdapter expects a path');
    if (typeof options !== 'object' || options === null) {
      throw new KronLoraError(
        'ERR_INVALID_ARG_TYPE',
        "exportAdapter expects options { format: 'peft-lora' | 'gguf-lora' | 'lycoris', name? }",
      );
    }
    await this.raw.exportAdapter(path, toJson(options));
  }

  /**
   * Write the model with its active adapters merged into the weights, for tools without adapter
   * support. A model loaded from a GGUF file: `path` is a `.gguf` file llama.cpp serves (tensors
   * and metadata copied unchanged, the adapted projections' weights in f32). A model loaded from
   * a Hugging Face directory: `path` is a directory transformers loads (`model.safetensors` with
   * the base's tensors as stored and the merged ones in f32, `config.json`, tokenizer files; a
   * classifier as `*ForSequenceClassification` with its labels).
   */
  async saveMerged(path: string): Promise<void> {
    if (typeof path !== 'string' || path === '') {
      throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'saveMerged expects a path: a .gguf file for a GGUF model, else a directory');
    }
    await this.raw.saveMerged(path);
  }

  /**
   * Add the adapter saved in `dir` (by `saveAdapter`, or PEFT LoRA / LoKr), or in one file: a
   * LyCORIS / kohya `.safetensors` (LoKr → Kron-LoRA, LoRA → LoRA) or a llama.cpp GGUF LoRA
   * `.gguf` (→ LoRA), told apart by the path; it can be trained further. `replace: true` swaps the weights of the adapter already named so (hot-swapping
   * while the model serves: the base stays loaded, the adapter keeps its active weight).
   */
  async loadAdapter(dir: string, options: { name?: string; replace?: boolean } = {}): Promise<{ modules: number }> {
    if (typeof dir !== 'string' || dir === '') throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'loadAdapter expects a directory path');
    if (typeof options !== 'object' || options === null)
      throw new KronLoraError('ERR_INVALID_ARG_TYPE', 'loadAdapter options must be an object like { name, replace }');
    const modules = await this.raw.loadAdapter(dir, toJson(options));
    await this.refresh();
    return { modules };
  }

  /** Release the model's memory now rather than at garbage collection (WASM backend). */
  dispose(): void {
    this.raw.dispose();
  }
}
