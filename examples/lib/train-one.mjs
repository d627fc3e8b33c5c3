// One fine-tuning run in its own process (so its peak memory is its own): load the model, add
// the adapter, train, evaluate on the test set, save the adapter. Prints one JSON line.
// Driven by examples/demo.mjs through the environment variable RUN (a JSON object).
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { withBackend } from 'kronlora';

const run = JSON.parse(process.env.RUN);
const api = withBackend(run.backend);
const peakMiB = () => process.resourceUsage().maxRSS / 1024;

const model = await api.loadModel(run.model, { task: 'sequence-classification', numLabels: 2, seed: run.seed });
await model.addAdapter('default', run.adapter);
const params = model.trainableParameters();
const steps = [];
const training = model.train({ ...run.train, outputDir: run.outputDir });
for await (const e of training) {
  if (e.type === 'step') {
    steps.push({ step: e.step, loss: e.loss, examplesPerSecond: e.examplesPerSecond });
    if (e.step % run.logEvery === 0 || e.step === e.totalSteps) {
      console.error(`  ${run.label}: step ${e.step}/${e.totalSteps} loss ${e.loss.toFixed(4)} ${e.examplesPerSecond.toFixed(1)} ex/s`);
    }
  }
}
const result = await training.result;
const started = performance.now();
const test = await model.evaluate(run.test, { batchSize: 32, maxLength: run.train.maxLength });
const evalSeconds = (performance.now() - started) / 1000;
const adapterBytes = readdirSync(result.adapterDir).reduce((n, f) => n + statSync(join(result.adapterDir, f)).size, 0);
console.log(
  JSON.stringify({
    label: run.label,
    adapter: run.adapter,
    trainable: params.trainable,
    adapterParameters: params.adapters.default,
    headParameters: params.head,
    total: params.total,
    testAccuracy: test.accuracy,
    testLoss: test.loss,
    trainSeconds: result.seconds,
    examplesPerSecond: result.examplesPerSecond,
    evalSeconds,
    peakRssMiB: peakMiB(),
    adapterDir: result.adapterDir,
    adapterBytes,
    steps,
  }),
);
