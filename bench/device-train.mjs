// The kronlora side of the device check (scripts/device-check.sh): train one adapter for a few
// steps on the models `bench/device_train.py models` writes and print one JSON line: per-step
// seconds, examples/s, tokens/s, peak memory. On a GPU the peak is the most device memory in use
// (nvidia-smi, sampled every 50 ms, less what was in use before the model loaded); on the CPU,
// peak RSS. The same steps as bench/train.mjs and the PEFT side: full batches, AdamW lr 1e-3.
//
//   node bench/device-train.mjs --package DIR --model DIR --data FILE --task classification|causal-lm
//        --adapter kron-lora|lora [--device cuda] [--batch 32] [--max-length 128] [--steps 10] [--warmup 3]
//
// `--package` is the kronlora package directory (dist/ and native/): the GPU machine has no
// node_modules, only what the device check brings.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const { values: a } = parseArgs({
  options: {
    package: { type: 'string' },
    model: { type: 'string' },
    data: { type: 'string' },
    task: { type: 'string' },
    adapter: { type: 'string' },
    device: { type: 'string', default: 'cuda' },
    batch: { type: 'string', default: '32' },
    'max-length': { type: 'string', default: '128' },
    steps: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
  },
});
for (const k of ['package', 'model', 'data', 'task', 'adapter']) if (!a[k]) throw new Error(`--${k} is required`);
const int = (k) => {
  const v = Number(a[k]);
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${k} must be a positive integer, got ${a[k]}`);
  return v;
};
const [batch, maxLength, steps, warmup] = ['batch', 'max-length', 'steps', 'warmup'].map(int);
const onGpu = a.device.startsWith('cuda');

/** Device memory in use (MiB) on GPU 0, by nvidia-smi. */
const gpuUsed = () =>
  new Promise((resolve) =>
    execFile('nvidia-smi', ['--query-gpu=memory.used', '--format=csv,noheader,nounits', '-i', '0'], (err, out) =>
      resolve(err ? Number.NaN : Number(out.trim())),
    ),
  );

const { loadModel } = await import(pathToFileURL(join(a.package, 'dist', 'index.js')).href);
const before = onGpu ? await gpuUsed() : 0;
let peakGpu = before;
let sampling = onGpu;
const sampler = (async () => {
  while (sampling) {
    peakGpu = Math.max(peakGpu, await gpuUsed());
    await new Promise((r) => setTimeout(r, 50));
  }
})();

const task = a.task === 'classification' ? 'sequence-classification' : 'causal-lm';
const model = await loadModel(a.model, { task, ...(task === 'sequence-classification' ? { numLabels: 2 } : {}), device: a.device });
const adapter =
  a.adapter === 'kron-lora'
    ? { type: 'kron-lora', rank: 8, alpha: 16, kronIn: 2, kronOut: 4, targetModules: 'all-linear' }
    : { type: 'lora', rank: 16, alpha: 32, targetModules: 'all-linear' };
await model.addAdapter('bench', adapter);
const records = readFileSync(a.data, 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((l) => JSON.parse(l));
const total = warmup + steps;
if (records.length < total * batch) throw new Error(`${a.data} has ${records.length} records; ${total * batch} needed`);
const run = model.train({
  data: records.slice(0, total * batch),
  task: a.task,
  validationSplit: 0,
  epochs: 1,
  maxSteps: total,
  batchSize: batch,
  maxLength,
  learningRate: 1e-3,
  logEvery: 1,
  seed: 1,
});
const stepSeconds = [];
for await (const e of run) if (e.type === 'step' && e.step > warmup) stepSeconds.push(batch / e.examplesPerSecond);
await run.result;
sampling = false;
await sampler;
const sorted = [...stepSeconds].sort((x, y) => x - y);
const median = sorted[Math.floor(sorted.length / 2)];
const rssPeak = () => {
  const line = readFileSync('/proc/self/status', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmHWM:'));
  return Number.parseInt(line.slice(6), 10) / 1024;
};
console.log(
  JSON.stringify({
    system: `kronlora-${model.backend}`,
    adapter: a.adapter,
    task: a.task,
    device: model.device,
    trainable: model.trainableParameters().trainable,
    stepSeconds,
    examplesPerSecond: batch / median,
    tokensPerSecond: (batch * maxLength) / median,
    peakMemoryMiB: onGpu ? peakGpu - before : rssPeak(),
  }),
);
