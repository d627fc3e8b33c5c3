// Experiment 1, parameter budget: accuracy against trainable adapter parameters on two
// classification sets (IMDB sentiment, SpamAssassin spam/ham), all-MiniLM-L6-v2 with a
// classification head, adapters on all linear layers. Kron-LoRA with (d_A1, d_A2) in
// {2×2, 2×4, 4×4, 4×8} and r in {4, 8, 16}, LoRA with r in {1, 2, 4, 8, 16}, alpha = 2r; the
// headline points (Kron-LoRA 2×4 r 8, LoRA r 8 and r 16) with three seeds, mean ± sd.
//
//   npm run experiment -- parameter-budget [--quick] [--train N] [--test N] [--max-length N]
//                                          [--epochs N] [--lr X] [--out DIR]
import { join } from 'node:path';
import { loadModel } from 'kronlora';
import { fetchImdb, fetchSpamAssassin, imdbSplit, spamSplit } from '../scripts/fetch-data.mjs';
import { fetchModel } from '../scripts/fetch-models.mjs';
import { experimentArgs, machine, markdownTable, meanSd, progress, svgOf, trainOptions, writeOutputs } from './lib.mjs';

export async function run(argv, { root, out }) {
  const a = experimentArgs(
    argv,
    { batchSize: '16', lr: '3e-3' },
    { 'max-length': { type: 'string' }, epochs: { type: 'string', default: '1' } },
  );
  const settings = {
    train: Number(a.train ?? (a.quick ? 640 : 2000)),
    test: Number(a.test ?? (a.quick ? 500 : 1000)),
    maxLength: Number(a['max-length'] ?? (a.quick ? 64 : 128)),
    epochs: Number(a.epochs),
    learningRate: Number(a.lr),
    batchSize: Number(a['batch-size']),
  };
  const model = await fetchModel('minilm');
  await fetchImdb();
  await fetchSpamAssassin();
  const datasets = [
    { name: 'IMDB', ...imdbSplit({ dir: join(root, '.cache/data/experiment-imdb'), train: settings.train, test: settings.test }) },
    { name: 'SpamAssassin', ...spamSplit({ dir: join(root, '.cache/data/experiment-spam'), train: settings.train, test: settings.test }) },
  ];
  const headline = (c) => (c.type === 'kron-lora' ? c.kronIn === 2 && c.kronOut === 4 && c.rank === 8 : c.rank === 8 || c.rank === 16);
  const configs = [
    ...[
      [2, 2],
      [2, 4],
      [4, 4],
      [4, 8],
    ].flatMap(([kronIn, kronOut]) => [4, 8, 16].map((rank) => ({ type: 'kron-lora', kronIn, kronOut, rank }))),
    ...[1, 2, 4, 8, 16].map((rank) => ({ type: 'lora', rank })),
  ];
  const jobs = datasets.flatMap((data) =>
    configs.flatMap((config) => (headline(config) ? [1, 2, 3] : [1]).map((seed) => ({ data, config, seed }))),
  );
  const label = (c) => (c.type === 'kron-lora' ? `Kron-LoRA ${c.kronIn}×${c.kronOut} r${c.rank}` : `LoRA r${c.rank}`);
  console.log(
    `parameter budget: ${jobs.length} runs (${configs.length} adapters × 2 data sets, headline points × 3 seeds); ${JSON.stringify(settings)}`,
  );
  const bar = progress(jobs.length);
  const runs = [];
  for (const { data, config, seed } of jobs) {
    const m = await loadModel(model, { task: 'sequence-classification', numLabels: 2, seed });
    await m.addAdapter('default', { ...config, alpha: 2 * config.rank, targetModules: 'all-linear', seed });
    const parameters = m.trainableParameters().adapters.default;
    const t0 = performance.now();
    const result = await m.train({ data: data.train, ...trainOptions(settings, seed) }).result;
    const trainSeconds = (performance.now() - t0) / 1000;
    const metrics = await m.evaluate(data.test, { maxLength: settings.maxLength });
    runs.push({
      data: data.name,
      ...config,
      label: label(config),
      seed,
      parameters,
      accuracy: metrics.accuracy,
      loss: metrics.loss,
      finalTrainLoss: result.losses.at(-1),
      trainSeconds,
    });
    bar.tick(`${data.name} ${label(config)} seed ${seed}: ${parameters} parameters, accuracy ${(metrics.accuracy * 100).toFixed(1)} %`);
  }
  const points = datasets.flatMap((data) =>
    configs.map((config) => {
      const rs = runs.filter((r) => r.data === data.name && r.label === label(config));
      const acc = meanSd(rs.map((r) => r.accuracy));
      return {
        data: data.name,
        method: config.type === 'kron-lora' ? 'Kron-LoRA' : 'LoRA',
        label: label(config),
        parameters: rs[0].parameters,
        seeds: rs.length,
        accuracy: acc.mean,
        sd: acc.sd,
      };
    }),
  );
  const pct = (p) => (p.seeds > 1 ? `${(p.accuracy * 100).toFixed(1)} ± ${(p.sd * 100).toFixed(1)}` : (p.accuracy * 100).toFixed(1));
  const table = markdownTable(
    ['adapter', 'trainable adapter parameters', ...datasets.map((d) => `${d.name} accuracy %`)],
    configs.map((c) => {
      const ps = datasets.map((d) => points.find((p) => p.data === d.name && p.label === label(c)));
      return [label(c), ps[0].parameters.toLocaleString('en-US'), ...ps.map(pct)];
    }),
  );
  console.log(`\n${table}\n(± sd over 3 seeds for the headline points; one seed otherwise)`);
  const svg = await svgOf({
    title: `Accuracy vs trainable adapter parameters (MiniLM, ${settings.train} training examples)`,
    data: { values: points.map((p) => ({ ...p, low: p.accuracy - p.sd, high: p.accuracy + p.sd })) },
    facet: { column: { field: 'data', type: 'nominal', title: null } },
    spec: {
      width: 360,
      height: 280,
      layer: [
        {
          mark: { type: 'point', filled: true, size: 70 },
          encoding: {
            x: { field: 'parameters', type: 'quantitative', scale: { type: 'log' }, title: 'trainable adapter parameters (log)' },
            y: { field: 'accuracy', type: 'quantitative', scale: { zero: false }, title: 'test accuracy', axis: { format: '%' } },
            color: { field: 'method', type: 'nominal', title: null },
            shape: { field: 'method', type: 'nominal', title: null },
            tooltip: [{ field: 'label' }, { field: 'accuracy', format: '.3f' }],
          },
        },
        {
          mark: { type: 'rule' },
          transform: [{ filter: 'datum.seeds > 1' }],
          encoding: {
            x: { field: 'parameters', type: 'quantitative', scale: { type: 'log' } },
            y: { field: 'low', type: 'quantitative' },
            y2: { field: 'high' },
            color: { field: 'method', type: 'nominal' },
          },
        },
      ],
    },
  });
  const result = {
    experiment: 'parameter-budget',
    date: new Date().toISOString(),
    machine: machine(),
    durationSeconds: bar.seconds(),
    settings,
    model: 'all-MiniLM-L6-v2',
    points,
    runs,
    table,
  };
  writeOutputs(out, result, { 'accuracy-vs-parameters.svg': svg });
  return result;
}
