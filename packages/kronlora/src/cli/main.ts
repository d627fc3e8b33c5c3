/**
 * The `kronlora` command: `train`, `eval`, `info`, `generate`, `export` and `merge`, each with `--help`
 * (commander), `--json` for one machine-readable result object, exit code 0 on success, 1 with
 * a one-line reason on error (2 for usage errors, 130 when interrupted).
 */
import { Command, CommanderError } from 'commander';
import { KronLoraError } from '../errors.js';
import { generateCommand } from './generate.js';
import { exportCommand } from './export.js';
import { evalCommand, infoCommand } from './inspect.js';
import { mergeCommand } from './merge.js';
import { type Io, processIo } from './output.js';
import { Interrupted } from './shared.js';
import { trainCommand } from './train.js';

function program(io: Io): Command {
  const root = new Command('kronlora')
    .description('Fine-tune language models with Kron-LoRA (ΔW = A ⊗ (B1·B2)) or LoRA adapters.')
    .version('0.1.0')
    .showSuggestionAfterError()
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) })
    .exitOverride();
  root.addHelpText(
    'after',
    `
Examples:
  kronlora train --model .cache/models/minilm --data train.jsonl --out runs/kron
  kronlora eval --model .cache/models/minilm --adapter runs/kron/adapter --data test.jsonl
  kronlora info --model .cache/models/minilm --adapter lora --rank 16
  kronlora generate --model smollm2.gguf --prompt "The capital of France is"
  kronlora export --model smollm2.gguf --adapter runs/chat/adapter --format gguf-lora --out chat.gguf`,
  );
  trainCommand(root, io);
  evalCommand(root, io);
  infoCommand(root, io);
  generateCommand(root, io);
  exportCommand(root, io);
  mergeCommand(root, io);
  for (const cmd of root.commands)
    cmd.exitOverride().configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) });
  return root;
}

/** Run the CLI on `argv` (without `node` and the script); resolves to the exit code. */
export async function main(argv: string[], io: Io = processIo): Promise<number> {
  const debug = argv.includes('--debug') || process.env.KRONLORA_DEBUG === '1';
  try {
    await program(io).parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version exit 0; commander already printed usage errors (one line).
      return error.exitCode === 0 ? 0 : 2;
    }
    if (error instanceof Interrupted) return 130;
    const message = error instanceof Error ? error.message : String(error);
    const code = error instanceof KronLoraError ? ` [${error.code}]` : '';
    io.err(`kronlora: error${code}: ${message.split('\n')[0]}`);
    if (debug && error instanceof Error && error.stack) io.err(error.stack);
    return 1;
  }
}
