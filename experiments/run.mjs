// `npm run experiment -- <name> [options]`: one of the experiments, which prints its table,
// shows progress, and writes result.json (with the machine and the duration) and its charts
// (SVG) to experiments/out/<name>/ (or --out DIR). Models and data are fetched into .cache/.
//
//   parameter-budget   accuracy vs trainable parameters, Kron-LoRA vs LoRA, two classification sets
//   causal-lm          SmolLM2 fine-tuned with Kron-LoRA and LoRA, quantised and f32 base
//   sequential         task A then task B: retention of A, accuracy on B
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const NAMES = ['parameter-budget', 'causal-lm', 'sequential'];
const [name, ...rest] = process.argv.slice(2);
if (!NAMES.includes(name)) {
  console.error(`usage: npm run experiment -- <${NAMES.join('|')}> [--quick] [--out DIR] [options]`);
  process.exit(2);
}
const outAt = rest.indexOf('--out');
const out = outAt >= 0 ? resolve(rest[outAt + 1]) : join(here, 'out', name);
const argv = outAt >= 0 ? [...rest.slice(0, outAt), ...rest.slice(outAt + 2)] : rest;
const { run } = await import(`./${name}.mjs`);
const started = new Date();
const result = await run(argv, { root, out });
const m = result.machine;
console.log(
  `${name}: ${m.cpu} (${m.isa}), ${m.threads} threads, Node ${m.node}; ${started.toISOString()}, ${(result.durationSeconds / 60).toFixed(1)} min`,
);
