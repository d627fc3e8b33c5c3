/**
 * What the commands share: their common flags, number parsing, picking the backend, loading the model for a task, building the
 * adapter config from flags, and reading what a saved adapter directory says about itself.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { backend, withBackend } from '../index.js';
import type { AdapterConfig, Model, Task } from '../model.js';
import { KronLoraError, call } from '../errors.js';
import { type Binding, defaultBinding, loadBackend } from '../backend.js';
import { type Command, Option } from 'commander';

export interface CommonFlags {
  model: string;
  backend?: 'native' | 'wasm';
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

/** The API on `--backend`, else on the default backend (KRONLORA_BACKEND, else native, else WASM). */
export function api(flags: CommonFlags) {
  return withBackend(flags.backend ?? backend());
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

export function adapterConfig(f: AdapterFlags): AdapterConfig {
  const kron = f.adapter === 'kron-lora';
  const rank = int('rank', f.rank) ?? (kron ? 8 : 16);
  if (!kron && (f.kronIn !== undefined || f.kronOut !== undefined)) {
    throw new KronLoraError('ERR_INVALID_OPTION', '--kron-in / --kron-out apply to --adapter kron-lora only');
  }
  return {
    type: f.adapter,
    rank,
    alpha: num('alpha', f.alpha) ?? 2 * rank,
    ...(kron ? { kronIn: int('kron-in', f.kronIn) ?? 2, kronOut: int('kron-out', f.kronOut) ?? 4 } : {}),
    targetModules: targets(f.targets),
    dropout: num('dropout', f.dropout) ?? 0,
  };
}

/** The backend `--backend` names, else the default one. */
function binding(flags: CommonFlags): Binding {
  return flags.backend ? loadBackend(flags.backend) : defaultBinding();
}

/** How many classes a classification file needs (the core parses and counts its labels). */
export function numLabelsOf(flags: CommonFlags, path: string): number {
  const summary = call(() => binding(flags).labelSummary(readFileSync(path, 'utf8'), path));
  return (JSON.parse(summary) as { numLabels: number }).numLabels;
}

/**
 * The adapter directory `--adapter` names: the directory itself when it holds an adapter, else
 * its `adapter/` (what `kronlora train --out <dir>` writes there), so the folder a user named
 * for training works too.
 */
export function adapterDir(dir: string): string {
  const config = 'adapter_config.json';
  if (existsSync(join(dir, config))) return dir;
  if (existsSync(join(dir, 'adapter', config))) return join(dir, 'adapter');
  if (!existsSync(dir)) throw new KronLoraError('ERR_INVALID_OPTION', `--adapter ${dir}: no such file or directory`);
  throw new KronLoraError(
    'ERR_INVALID_OPTION',
    `--adapter ${dir} holds no ${config} (nor adapter/${config}); pass an adapter directory or the --out directory of kronlora train`,
  );
}

/** What `adapter_config.json` says about the model it was trained for (read by the core). */
export function savedAdapter(flags: CommonFlags, dir: string): { task?: Task; numLabels?: number } {
  const file = join(dir, 'adapter_config.json');
  checkFile('adapter', file);
  const { task, numLabels } = JSON.parse(call(() => binding(flags).adapterConfigSummary(readFileSync(file, 'utf8'), file)));
  return { task: task ?? undefined, numLabels: numLabels ?? undefined };
}

export async function loadFor(flags: CommonFlags, task: Task | undefined, numLabels?: number): Promise<Model> {
  checkFile('model', flags.model);
  const options = task === 'sequence-classification' ? { task, numLabels: numLabels ?? 2 } : task ? { task } : {};
  return api(flags).loadModel(flags.model, options);
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
    .addOption(new Option('--backend <name>', 'native addon or WASM (default: native when it loads)').choices(['native', 'wasm']))
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
