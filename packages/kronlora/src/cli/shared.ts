/**
 * What the commands share: their common flags, number parsing, picking the backend, loading the model for a task, building the
 * adapter config from flags, and reading what a saved adapter directory says about itself.
 */
import { existsSync } from 'node:fs';
import { withBackend } from '../index.js';
import type { AdapterConfig, LoadModelOptions, Model, Task } from '../model.js';
import type { TrainTask } from '../training.js';
import { KronLoraError, call } from '../errors.js';
import { bindingForDevice, defaultBinding, deviceOverride, loadBackend } from '../backend.js';
import type { BackendName, Binding } from '../binding.js';
import { type Command, Option } from 'commander';

export interface CommonFlags {
  model: string;
  backend?: BackendName;
  device?: string;
  dequantize?: boolean;
  json?: boolean;
  debug?: boolean;
}

export interface AdapterFlags {
  adapter: 'kron-lora' | 'lora';
  rank?: string;
  alpha?: string;
  kronIn?: string;
  kronOut?: string;
  targets: string;
  dropout: string;
}

/**
 * The API on `--backend`, else on the backend for `--device` (the CUDA addon for a GPU, else
 * KRONLORA_BACKEND, else native, else WASM).
 */
export function api(flags: CommonFlags) {
  return withBackend(flags.backend ?? bindingForDevice(deviceOverride() ?? flags.device).name);
}

export function checkFile(flag: string, path: string): void {
  if (!existsSync(path)) throw new KronLoraError('ERR_INVALID_OPTION', `--${flag} ${path}: no such file or directory`);
}

/** `--targets`: `all-linear`, a comma-separated list of names, or a regular expression. */
function targets(value: string): string | string[] {
  if (value === 'all-linear') return value;
  if (/^[\w.-]+(,[\w.-]+)*$/.test(value)) return value.split(',');
  return value;
}

/**
 * The adapter config the flags describe. The CLI's own defaults are the rank (8 for Kron-LoRA,
 * 16 for LoRA) and alpha = 2 × rank; everything else (the Kronecker factors, what fits which
 * adapter type) is the core's to default and check.
 */
export function adapterConfig(f: AdapterFlags): AdapterConfig {
  const rank = int('rank', f.rank) ?? (f.adapter === 'kron-lora' ? 8 : 16);
  const kronIn = int('kron-in', f.kronIn);
  const kronOut = int('kron-out', f.kronOut);
  return {
    type: f.adapter,
    rank,
    alpha: num('alpha', f.alpha) ?? 2 * rank,
    ...(kronIn !== undefined ? { kronIn } : {}),
    ...(kronOut !== undefined ? { kronOut } : {}),
    targetModules: targets(f.targets),
    dropout: num('dropout', f.dropout) ?? 0,
  };
}

/** The backend `--backend` names, else the default one. */
function binding(flags: CommonFlags): Binding {
  return flags.backend ? loadBackend(flags.backend) : defaultBinding();
}

/** What the adapter at `dir` (or `dir/adapter`, a training run's output) was trained for. */
export function savedAdapter(flags: CommonFlags, dir: string): { dir: string; task?: Task; numLabels?: number } {
  const saved = JSON.parse(call(() => binding(flags).savedAdapter(dir)));
  return { dir: saved.dir, task: saved.task ?? undefined, numLabels: saved.numLabels ?? undefined };
}

/**
 * How to train the model at `--model`: the training task (`--task`, else the model family's)
 * and the load options for it (a classifier's head sized by the labels in `data`); the core decides.
 */
export function trainingSetup(
  flags: CommonFlags,
  task: string | undefined,
  data: string,
): { task: TrainTask; modelOptions: LoadModelOptions } {
  return JSON.parse(call(() => binding(flags).trainingSetup(flags.model, JSON.stringify({ task, data }))));
}

/** Load `--model` (on `--device`, dequantised with `--dequantize`) with `options`. */
export async function loadModelFor(flags: CommonFlags, options: LoadModelOptions): Promise<Model> {
  checkFile('model', flags.model);
  return api(flags).loadModel(flags.model, {
    ...options,
    ...(flags.device ? { device: flags.device as LoadModelOptions['device'] } : {}),
    ...(flags.dequantize ? { quantized: false } : {}),
  });
}

/** Load `--model` for `task` (the family's own when absent). */
export function loadFor(flags: CommonFlags, task: Task | undefined, numLabels?: number): Promise<Model> {
  return loadModelFor(flags, { ...(task ? { task } : {}), ...(numLabels !== undefined ? { numLabels } : {}) });
}

/** Options every command that builds an adapter takes. */
export function adapterOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--adapter <type>', 'adapter type').choices(['kron-lora', 'lora']).default('kron-lora'))
    .option('--rank <n>', 'adapter rank r (default: 8 for kron-lora, 16 for lora)')
    .option('--alpha <x>', 'scale numerator; the scale is alpha / rank (default: 2 × rank)')
    .option('--kron-in <n>', 'Kron-LoRA d_A1, the outer factor of the input width (default 2)')
    .option('--kron-out <n>', 'Kron-LoRA d_A2, the outer factor of the output width (default 4)')
    .option('--targets <modules>', 'all-linear, comma-separated module names (query,value) or a regular expression', 'all-linear')
    .option('--dropout <p>', 'adapter dropout during training', '0');
}

export function common(cmd: Command): Command {
  return cmd
    .requiredOption('--model <path>', 'Hugging Face model directory or .gguf file')
    .addOption(
      new Option('--backend <name>', 'native addon, its CUDA build, or WASM (default: native when it loads)').choices([
        'native',
        'cuda',
        'wasm',
      ]),
    )
    .option('--device <device>', 'cpu (default), cuda, cuda:N or auto (a GPU when the CUDA addon sees one); KRONLORA_DEVICE overrides')
    .option('--dequantize', 'GGUF models: dequantise every weight to f32 instead of keeping the quantised blocks (the CPU default)')
    .option('--json', 'print one JSON object with the result instead of text')
    .option('--debug', 'print stack traces on errors');
}

/** Thrown after an interrupted run has been reported. */
export class Interrupted extends Error {}

/** A positive integer option, or a usage error naming it. */
export function int(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new KronLoraError('ERR_INVALID_OPTION', `--${name} must be a positive integer, got "${value}"`);
  return n;
}

/** A finite number option. */
export function num(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n))
    throw new KronLoraError('ERR_INVALID_OPTION', `--${name} must be a number, got "${value}"`);
  return n;
}
