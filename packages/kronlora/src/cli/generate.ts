/** `kronlora generate`: continue a prompt with a causal LM, with or without a saved adapter. */
import type { Command } from 'commander';
import type { Io } from './output.js';
import { type CommonFlags, common, int, loadFor, num, savedAdapter } from './shared.js';

interface GenerateFlags extends CommonFlags {
  adapter?: string;
  prompt: string;
  maxTokens: string;
  temperature: string;
  seed: string;
}

export function generateCommand(root: Command, io: Io): void {
  const cmd = root.command('generate').description('continue a prompt with a causal LM (optionally with a trained adapter)');
  common(cmd)
    .option('--adapter <dir>', 'adapter directory to apply')
    .requiredOption('--prompt <text>', 'the text to continue')
    .option('--max-tokens <n>', 'tokens to generate at most', '64')
    .option('--temperature <x>', '0 is greedy; higher samples more freely', '0')
    .option('--seed <n>', 'seed of the sampling', '0')
    .addHelpText(
      'after',
      `
Examples:
  kronlora generate --model smollm2.gguf --prompt "The capital of France is"
  kronlora generate --model smollm2.gguf --adapter runs/chat/adapter --prompt "Hi" --temperature 0.7 --json`,
    );
  cmd.action(async (f: GenerateFlags) => {
    const saved = f.adapter ? savedAdapter(f, f.adapter) : undefined;
    const model = await loadFor(f, saved?.task);
    if (saved) await model.loadAdapter(saved.dir);
    const g = await model.generate(f.prompt, {
      maxTokens: int('max-tokens', f.maxTokens),
      temperature: num('temperature', f.temperature),
      seed: num('seed', f.seed),
    });
    if (f.json) {
      io.out(
        JSON.stringify({ command: 'generate', model: f.model, adapter: f.adapter ?? null, backend: model.backend, prompt: f.prompt, ...g }),
      );
      return;
    }
    io.out(`${f.prompt}${g.text}`);
  });
}
