// The one-command demo: fine-tune all-MiniLM-L6-v2 on IMDB sentiment with Kron-LoRA
// (d_A1 = 2, d_A2 = 4, r = 8) and with LoRA (r = 16), both on all linear layers plus the
// classification head, on the same seeded split; print a comparison table and write the
// adapters, the results and a loss-curve chart (SVG) to an output folder.
//
//   npm run demo                      2 000 train / 500 test reviews, 1 epoch (about 5 min on 2 cores)
//   npm run demo -- --full            20 000 train / 5 000 test (or KRONLORA_DEMO_FULL=1)
//   node examples/demo.mjs [--train N] [--test N] [--epochs N] [--max-length N] [--batch-size N]
//                          [--lr X] [--seed N] [--backend native|wasm] [--out DIR]
//                          [--model DIR --train-file F --test-file F]   (your own model and data)
//
// The model and data are fetched into .cache/ once. Each run is a fresh Node process, so its
// peak memory is its own.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { lossChartSvg } from './lib/chart.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { values: a } = parseArgs({
  options: {
    full: { type: 'boolean', default: process.env.KRONLORA_DEMO_FULL === '1' },
    train: { type: 'string' },
    test: { type: 'string' },
    epochs: { type: 'string', default: '1' },
    'max-length': { type: 'string' },
    'batch-size': { type: 'string', default: '16' },
    lr: { type: 'string', default: '2e-3' },
    seed: { type: 'string', default: '42' },
    backend: { type: 'string', default: 'native' },
    out: { type: 'string', default: join(here, 'out', 'demo') },
    model: { type: 'string' },
    'train-file': { type: 'string' },
    'test-file': { type: 'string' },
  },
});
const sizes = { train: Number(a.train ?? (a.full ? 20000 : 2000)), test: Number(a.test ?? (a.full ? 5000 : 500)) };
const out = resolve(a.out);
// The demo writes only into a folder of its own: a new or empty one, or one an earlier demo run
// wrote (its results.json says so). Anything else is refused before the run: no file of yours
// is replaced.
const isDemoFolder = (dir) => {
  try {
    const earlier = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8'));
    return Array.isArray(earlier.results) && typeof earlier.sizes === 'object';
  } catch {
    return false;
  }
};
if (existsSync(out) && (!statSync(out).isDirectory() || (readdirSync(out).length > 0 && !isDemoFolder(out)))) {
  console.error(
    `kronlora demo: [ERR_WOULD_OVERWRITE] --out ${out} is neither an empty folder nor an earlier demo's output folder (no demo results.json); pass a new or empty folder`,
  );
  process.exit(1);
}
const writeAtomic = (file, text) => {
  // A temporary name of this process's own, created new ('wx'): no file of yours is replaced.
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { flag: 'wx' });
  renameSync(tmp, file);
};

let model = a.model;
let data;
if (model) {
  if (!a['train-file'] || !a['test-file']) throw new Error('--model needs --train-file and --test-file');
  data = { train: resolve(a['train-file']), test: resolve(a['test-file']) };
} else {
  const { fetchModel } = await import('../scripts/fetch-models.mjs');
  const { fetchImdb, imdbSplit } = await import('../scripts/fetch-data.mjs');
  model = await fetchModel('minilm');
  await fetchImdb();
  data = imdbSplit({ dir: join(out, 'data'), ...sizes, seed: Number(a.seed) });
}
const train = {
  data: data.train,
  validationSplit: 0,
  epochs: Number(a.epochs),
  batchSize: Number(a['batch-size']),
  learningRate: Number(a.lr),
  ...(a['max-length'] ? { maxLength: Number(a['max-length']) } : {}),
  seed: Number(a.seed),
  warmupRatio: 0.06,
};
const runs = [
  { label: 'Kron-LoRA', adapter: { type: 'kron-lora', rank: 8, alpha: 16, kronIn: 2, kronOut: 4, targetModules: 'all-linear' } },
  { label: 'LoRA', adapter: { type: 'lora', rank: 16, alpha: 32, targetModules: 'all-linear' } },
];
console.error(
  `kronlora demo: ${a.model ? `${data.train} / ${data.test}` : `IMDB, ${sizes.train} train / ${sizes.test} test reviews`}, max length ${a['max-length'] ?? 128}, ${a.epochs} epoch(s), ${a.backend} backend`,
);
const results = runs.map((r) => {
  const run = {
    ...r,
    backend: a.backend,
    model,
    seed: Number(a.seed),
    train,
    test: data.test,
    outputDir: join(out, r.label.toLowerCase()),
    logEvery: 10,
  };
  const stdout = execFileSync(process.execPath, [join(here, 'lib', 'train-one.mjs')], {
    encoding: 'utf8',
    env: { ...process.env, RUN: JSON.stringify(run) },
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 1 << 26,
  });
  return JSON.parse(stdout.trim().split('\n').pop());
});

const [kron, lora] = results;
const fmt = (n) => n.toLocaleString('en-US');
const ratio = (x, y) => (x / y).toFixed(3);
const rows = [
  ['', 'Kron-LoRA', 'LoRA', 'Kron-LoRA / LoRA'],
  ['trainable parameters (adapter + head)', fmt(kron.trainable), fmt(lora.trainable), ratio(kron.trainable, lora.trainable)],
  ['  of them adapter', fmt(kron.adapterParameters), fmt(lora.adapterParameters), ratio(kron.adapterParameters, lora.adapterParameters)],
  [
    'test accuracy',
    kron.testAccuracy.toFixed(3),
    lora.testAccuracy.toFixed(3),
    `${kron.testAccuracy >= lora.testAccuracy ? '+' : ''}${(kron.testAccuracy - lora.testAccuracy).toFixed(3)}`,
  ],
  [
    'training examples/s',
    kron.examplesPerSecond.toFixed(1),
    lora.examplesPerSecond.toFixed(1),
    ratio(kron.examplesPerSecond, lora.examplesPerSecond),
  ],
  ['peak memory (RSS, MiB)', kron.peakRssMiB.toFixed(0), lora.peakRssMiB.toFixed(0), ratio(kron.peakRssMiB, lora.peakRssMiB)],
  [
    'adapter files (KiB)',
    (kron.adapterBytes / 1024).toFixed(0),
    (lora.adapterBytes / 1024).toFixed(0),
    ratio(kron.adapterBytes, lora.adapterBytes),
  ],
];
const table = [
  `| ${rows[0].join(' | ')} |`,
  `|${rows[0].map(() => '---').join('|')}|`,
  ...rows.slice(1).map((r) => `| ${r.join(' | ')} |`),
].join('\n');

mkdirSync(out, { recursive: true });
const chart = join(out, 'loss.svg');
writeAtomic(
  chart,
  await lossChartSvg(results, `Training loss, ${a.model ? 'your data' : `IMDB (${sizes.train} reviews)`}: Kron-LoRA vs LoRA`),
);
writeAtomic(join(out, 'results.json'), JSON.stringify({ date: new Date().toISOString(), options: a, sizes, train, results }, null, 2));
console.log(`\n${table}\n`);
console.log(`output folder: ${out}`);
console.log(`  loss curves: ${chart}`);
console.log(`  adapters:    ${kron.adapterDir}, ${lora.adapterDir}`);
console.log(`  results:     ${join(out, 'results.json')}`);
