// Median training-step seconds of one short kronlora run, for A/B comparisons of two builds or
// settings in alternation (the README's Kron-LoRA block-diagonal and OpenBLAS figures):
//   KIND=lora|kron-lora STEPS=12 RAYON_NUM_THREADS=2 node bench/step-times.mjs
// BACKEND=wasm runs the WASM backend instead of the native addon (one thread).
// Same model, data and adapters as bench/train.mjs (run that once first: it writes the data);
// steps 1–2 are warm-up. Prints each step's seconds and loss, then the median.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withBackend } from 'kronlora';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const kind = process.env.KIND ?? 'lora';
const steps = Number(process.env.STEPS ?? 12);
if (!['lora', 'kron-lora'].includes(kind) || !(steps >= 3)) throw new Error('KIND must be lora or kron-lora, STEPS ≥ 3');
const records = readFileSync(join(root, '.cache/data/bench-train/long.jsonl'), 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((l) => JSON.parse(l));
if (records.length < steps * 16) throw new Error(`${records.length} records; run bench/train.mjs first or lower STEPS`);
const model = await withBackend(process.env.BACKEND ?? 'native').loadModel(join(root, '.cache/models/minilm'), {
  task: 'sequence-classification',
  numLabels: 2,
});
await model.addAdapter(
  'ab',
  kind === 'kron-lora'
    ? { type: 'kron-lora', rank: 8, alpha: 16, kronIn: 2, kronOut: 4, targetModules: 'all-linear' }
    : { type: 'lora', rank: 16, alpha: 32, targetModules: 'all-linear' },
);
const run = model.train({
  data: records.slice(0, steps * 16),
  validationSplit: 0,
  epochs: 1,
  maxSteps: steps,
  batchSize: 16,
  maxLength: 128,
  learningRate: 1e-3,
  logEvery: 1,
  seed: 1,
});
const seconds = [];
for await (const e of run) {
  if (e.type !== 'step') continue;
  console.log(e.step, (16 / e.examplesPerSecond).toFixed(3), e.loss);
  if (e.step > 2) seconds.push(16 / e.examplesPerSecond);
}
await run.result;
seconds.sort((x, y) => x - y);
console.log('median step seconds', seconds[Math.floor((seconds.length - 1) / 2)].toFixed(3));
