// One short training run in a fresh process, for the memory benchmarks and the experiments (peak
// RSS is the process's): `node bench/training-child.mjs '<json>'` with { model, task, batch,
// maxLength, steps, data, loadOptions?, trainOptions?, adapter?, evaluate? } prints one JSON line:
// RSS after load, peak RSS, median step seconds (the first step excluded), losses, the adapter's
// trainable parameters, with `evaluate` (a JSONL path) its metrics after training, and with
// `generateTokens` greedy generation's tokens per second (after training, before exiting).
// `adapter` defaults to Kron-LoRA d_A1 = 2, d_A2 = 4, r = 8 on all linear layers.
import { readFileSync } from 'node:fs';
import { loadModel } from 'kronlora';

const s = JSON.parse(process.argv[2]);
const classify = s.task === 'sequence-classification';
const model = await loadModel(s.model, { ...(classify ? { task: s.task, numLabels: 2 } : {}), ...s.loadOptions });
const rssAfterLoadMiB = process.memoryUsage().rss / 2 ** 20;
await model.addAdapter('k', s.adapter ?? { type: 'kron-lora', rank: 8, alpha: 16, targetModules: 'all-linear' });
const parameters = model.trainableParameters().adapters.k;
const records = readFileSync(s.data, 'utf8')
  .split('\n')
  .filter(Boolean)
  .slice(0, s.steps * s.batch)
  .map((l) => JSON.parse(l))
  .map((r) => (classify || !r.text ? r : { text: r.text }));
const run = model.train({
  data: records,
  validationSplit: 0,
  maxSteps: s.steps,
  batchSize: s.batch,
  maxLength: s.maxLength,
  learningRate: 1e-3,
  logEvery: 1,
  seed: 1,
  ...s.trainOptions,
});
const seconds = [];
const losses = [];
for await (const e of run) {
  if (e.type !== 'step') continue;
  losses.push(e.loss);
  if (e.step > 1) seconds.push(s.batch / e.examplesPerSecond);
}
await run.result;
seconds.sort((x, y) => x - y);
const peakTrainingRssMiB = process.resourceUsage().maxRSS / 1024;
const metrics = s.evaluate ? await model.evaluate(s.evaluate, { maxLength: s.maxLength }) : undefined;
let generateTokensPerSecond;
if (s.generateTokens) {
  await model.generate('Hi', { maxTokens: 2 });
  const t0 = performance.now();
  const g = await model.generate('Once upon a time, in a small village by the sea,', { maxTokens: s.generateTokens });
  generateTokensPerSecond = g.generatedTokens / ((performance.now() - t0) / 1000);
}
const medianStepSeconds = seconds[Math.floor((seconds.length - 1) / 2)];
console.log(
  JSON.stringify({
    rssAfterLoadMiB,
    peakRssMiB: peakTrainingRssMiB,
    medianStepSeconds,
    trainTokensPerSecond: (s.batch * s.maxLength) / medianStepSeconds,
    generateTokensPerSecond,
    parameters,
    metrics,
    losses,
  }),
);
process.exit(0);
