/** `kronlora export`: a saved adapter as a PEFT LoRA directory, a GGUF LoRA file or a LyCORIS file. */
import { Option } from 'commander';
import type { Command } from 'commander';
import type { ExportFormat } from '../model.js';
import type { Io } from './output.js';
import { type CommonFlags, common, loadFor, savedAdapter } from './shared.js';

interface ExportFlags extends CommonFlags {
  adapter: string;
  format: ExportFormat;
  out: string;
}

export function exportCommand(root: Command, io: Io): void {
  const cmd = root.command('export').description('write a saved adapter for other tools: PEFT LoRA or llama.cpp GGUF LoRA');
  common(cmd)
    .requiredOption('--adapter <dir>', 'adapter directory (saveAdapter / kronlora train output)')
    .addOption(
      new Option(
        '--format <format>',
        'peft-lora: a PEFT directory; gguf-lora: one .gguf file (Llama-family models); lycoris: one .safetensors file',
      )
        .choices(['peft-lora', 'gguf-lora', 'lycoris'])
        .makeOptionMandatory(),
    )
    .requiredOption('--out <path>', 'where to write (a directory for peft-lora, a file otherwise)')
    .addHelpText(
      'after',
      `
A Kron-LoRA adapter is written as the plain LoRA it exactly is (rank kronIn × r), so every LoRA
consumer serves it with the same outputs.

Examples:
  kronlora export --model .cache/models/minilm --adapter runs/kron/adapter --format peft-lora --out runs/kron/peft
  kronlora export --model smollm2.gguf --adapter runs/chat/adapter --format gguf-lora --out chat-lora.gguf`,
    );
  cmd.action(async (f: ExportFlags) => {
    const saved = savedAdapter(f, f.adapter);
    const model = await loadFor(f, saved.task, saved.numLabels);
    await model.loadAdapter(saved.dir);
    await model.exportAdapter(f.out, { format: f.format });
    if (f.json) {
      io.out(
        JSON.stringify({ command: 'export', model: f.model, adapter: saved.dir, format: f.format, out: f.out, backend: model.backend }),
      );
      return;
    }
    io.out(`wrote ${f.out} (${f.format})`);
  });
}
