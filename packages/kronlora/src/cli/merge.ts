/**
 * `kronlora merge`: a model with a saved adapter folded into its weights: a GGUF file for llama.cpp
 * (GGUF base) or a Hugging Face directory for transformers.
 */
import type { Command } from 'commander';
import type { Io } from './output.js';
import { type CommonFlags, common, loadFor, savedAdapter } from './shared.js';

interface MergeFlags extends CommonFlags {
  adapter: string;
  out: string;
}

export function mergeCommand(root: Command, io: Io): void {
  const cmd = root
    .command('merge')
    .description('write the model with a saved adapter merged into its weights (GGUF file or Hugging Face directory)');
  common(cmd)
    .requiredOption('--adapter <dir>', 'adapter directory (saveAdapter / kronlora train output)')
    .requiredOption('--out <path>', 'the merged model to write: a .gguf file (GGUF base) or a directory')
    .addHelpText(
      'after',
      `
The base's tensors are copied unchanged (quantised ones stay quantised); the adapted projections'
weights are written merged, in f32. A Hugging Face base gives a directory transformers loads
(config.json, model.safetensors, tokenizer files; a classifier as *ForSequenceClassification).

Examples:
  kronlora merge --model smollm2.gguf --adapter runs/chat/adapter --out smollm2-chat.gguf
  kronlora merge --model .cache/models/minilm --adapter runs/imdb/adapter --out minilm-imdb`,
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
