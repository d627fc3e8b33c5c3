/** `kronlora merge`: a GGUF model with a saved adapter folded into its weights, for llama.cpp. */
import type { Command } from 'commander';
import type { Io } from './output.js';
import { type CommonFlags, common, loadFor, savedAdapter } from './shared.js';

interface MergeFlags extends CommonFlags {
  adapter: string;
  out: string;
}

export function mergeCommand(root: Command, io: Io): void {
  const cmd = root.command('merge').description('write a GGUF model with a saved adapter merged into its weights');
  common(cmd)
    .requiredOption('--adapter <dir>', 'adapter directory (saveAdapter / kronlora train output)')
    .requiredOption('--out <file.gguf>', 'the merged model to write')
    .addHelpText(
      'after',
      `
The base's tensors and metadata are copied unchanged (quantised ones stay quantised); the adapted
projections' weights are written merged, in f32.

Example:
  kronlora merge --model smollm2.gguf --adapter runs/chat/adapter --out smollm2-chat.gguf`,
    );
  cmd.action(async (f: MergeFlags) => {
    const saved = savedAdapter(f, f.adapter);
    const model = await loadFor(f, saved.task, saved.numLabels);
    await model.loadAdapter(saved.dir);
    await model.saveMerged(f.out);
    if (f.json) {
      io.out(JSON.stringify({ command: 'merge', model: f.model, adapter: saved.dir, out: f.out, backend: model.backend }));
      return;
    }
    io.out(`wrote ${f.out}`);
  });
}
