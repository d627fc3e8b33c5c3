// Check that a merged model directory written by saveMerged loads in Hugging Face transformers
// (no adapter support) and gives the adapted model's logits: trains a Kron-LoRA and a LoRA
// adapter briefly on the model, activates both (weights 0.7 and 1.3), writes the merged
// directory, runs scripts/reference/merged_logits.py (Python with torch and transformers) on it
// and prints the largest difference next to the size of the adapters' effect (and, for a
// decoder, next to how far transformers and kronlora differ on the base model itself).
//
//   node scripts/reference/check_merged.mjs <python> <model dir> <sequence-classification|causal-lm>
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from 'kronlora';

const [python, modelDir, task] = process.argv.slice(2);
const classify = task === 'sequence-classification';
const texts = [
  'A wonderful, moving film with a great cast.',
  'Dull plot, wooden acting; I left halfway through.',
  'It was fine. Nothing special.',
];
const data = classify
  ? texts.flatMap((text, i) => [
      { text, label: i % 2 },
      { text: `${text} Really.`, label: i % 2 },
    ])
  : texts.map((text) => ({ text }));
const model = await loadModel(modelDir, classify ? { task, numLabels: 2 } : {});
const adapters = [
  ['kron', { type: 'kron-lora', rank: 4, alpha: 8, targetModules: 'all-linear' }],
  ['lora', { type: 'lora', rank: 4, alpha: 8, targetModules: classify ? ['query', 'value'] : ['q_proj', 'v_proj'] }],
];
for (const [name, config] of adapters) {
  await model.addAdapter(name, config);
  await model.setActiveAdapters([name]);
  await model.train({ data, epochs: 2, batchSize: 2, learningRate: 5e-3, validationSplit: 0 }).result;
}
await model.disableAdapters();
const base = await model.logits(texts);
await model.setActiveAdapters(['kron', 'lora'], { weights: [0.7, 1.3] });
const ours = await model.logits(texts);
const dir = mkdtempSync(join(tmpdir(), 'kronlora-merged-'));
const merged = join(dir, 'merged');
await model.saveMerged(merged);
const file = join(dir, 'texts.json');
writeFileSync(file, JSON.stringify(texts));
const transformers = (dirPath) =>
  JSON.parse(
    execFileSync(python, [new URL('./merged_logits.py', import.meta.url).pathname, dirPath, task, file], {
      encoding: 'utf8',
      maxBuffer: 1 << 28,
    })
      .trim()
      .split('\n')
      .pop(),
  );
const largestDiff = (a, b) => a.reduce((m, row, i) => row.reduce((m, v, j) => Math.max(m, Math.abs(v - b[i][j])), m), 0);
const hf = transformers(merged);
const report = {
  modelDir,
  task,
  architectures: hf.architectures,
  maxAbsDiff: largestDiff(ours, hf.logits),
  adapterEffect: largestDiff(ours, base),
  largestLogit: largestDiff(
    ours,
    ours.map((row) => row.map(() => 0)),
  ),
};
// A decoder's base model loads in transformers as it is: how far the two agree without adapters.
if (!classify) report.baseDiff = largestDiff(base, transformers(modelDir).logits);
console.log(JSON.stringify(report));
