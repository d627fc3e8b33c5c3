// Fine-tune all-MiniLM-L6-v2 on IMDB sentiment with Kron-LoRA (d_A1 = 2, d_A2 = 4, r = 8) and
// with LoRA (r = 16), both on all linear layers plus the classification head, on the same
// seeded split; print and save test accuracy, trainable parameters, examples/s, peak memory.
//
//   node examples/imdb.mjs [--train 2000] [--test 1000] [--epochs 1] [--max-length 128]
//                          [--batch-size 16] [--lr 2e-3] [--backend native] [--out examples/out/imdb]
//
// Models and data are fetched into .cache/ on first use. Each run is a fresh Node process.
import { execFileSync } from 'node:child_process';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { fetchModel } from '../scripts/fetch-models.mjs';
import { fetchImdb, imdbSplit } from '../scripts/fetch-data.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { values: a } = parseArgs({
  options: {
    train: { type: 'string', default: '2000' },
    test: { type: 'string', default: '1000' },
    epochs: { type: 'string', default: '1' },
    'max-length': { type: 'string', default: '128' },
    'batch-size': { type: 'string', default: '16' },
    lr: { type: 'string', default: '2e-3' },
    seed: { type: 'string', default: '42' },
    backend: { type: 'string', default: 'native' },
    out: { type: 'string', default: join(here, 'out', 'imdb') },
  },
});
const out = resolve(a.out);
const model = await fetchModel('minilm');
await fetchImdb();
const split = imdbSplit({ dir: join(out, 'data'), train: Number(a.train), test: Number(a.test), seed: Number(a.seed) });
const train = {
  data: split.train, validationSplit: 0, epochs: Number(a.epochs), batchSize: Number(a['batch-size']),
  learningRate: Number(a.lr), maxLength: Number(a['max-length']), seed: Number(a.seed), warmupRatio: 0.06,
};
const runs = [
  { label: 'Kron-LoRA', adapter: { type: 'kron-lora', rank: 8, alpha: 16, kronIn: 2, kronOut: 4, targetModules: 'all-linear' } },
  { label: 'LoRA', adapter: { type: 'lora', rank: 16, alpha: 32, targetModules: 'all-linear' } },
];
console.error(`imdb: ${a.train} train / ${a.test} test reviews, max length ${a['max-length']}, ${a.epochs} epoch(s), ${a.backend} backend`);
const results = runs.map((r) => {
  const run = { ...r, backend: a.backend, model, seed: Number(a.seed), train, test: split.test, outputDir: join(out, r.label.toLowerCase()), logEvery: 10 };
  const stdout = execFileSync(process.execPath, [join(here, 'lib', 'train-one.mjs')], {
    encoding: 'utf8', env: { ...process.env, RUN: JSON.stringify(run) }, stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 26,
  });
  return JSON.parse(stdout.trim().split('\n').pop());
});

const [kron, lora] = results;
const fmt = (n) => n.toLocaleString('en-US');
const rows = [
  ['', 'Kron-LoRA', 'LoRA', 'Kron-LoRA / LoRA'],
  ['trainable parameters (adapter + head)', fmt(kron.trainable), fmt(lora.trainable), (kron.trainable / lora.trainable).toFixed(3)],
  ['adapter parameters', fmt(kron.adapterParameters), fmt(lora.adapterParameters), (kron.adapterParameters / lora.adapterParameters).toFixed(3)],
  ['test accuracy', kron.testAccuracy.toFixed(3), lora.testAccuracy.toFixed(3), (kron.testAccuracy - lora.testAccuracy >= 0 ? '+' : '') + (kron.testAccuracy - lora.testAccuracy).toFixed(3)],
  ['training examples/s', kron.examplesPerSecond.toFixed(1), lora.examplesPerSecond.toFixed(1), (kron.examplesPerSecond / lora.examplesPerSecond).toFixed(3)],
  ['peak RSS (MiB)', kron.peakRssMiB.toFixed(0), lora.peakRssMiB.toFixed(0), (kron.peakRssMiB / lora.peakRssMiB).toFixed(3)],
  ['adapter files (KiB)', (kron.adapterBytes / 1024).toFixed(0), (lora.adapterBytes / 1024).toFixed(0), (kron.adapterBytes / lora.adapterBytes).toFixed(3)],
];
const table = [`| ${rows[0].join(' | ')} |`, `|${rows[0].map(() => '---').join('|')}|`, ...rows.slice(1).map((r) => `| ${r.join(' | ')} |`)].join('\n');
console.log(table);
mkdirSync(out, { recursive: true });
const file = join(out, 'results.json');
writeFileSync(`${file}.tmp`, JSON.stringify({ date: new Date().toISOString(), options: a, train, results }, null, 2));
renameSync(`${file}.tmp`, file);
console.log(`\nresults: ${file}\nadapters: ${kron.adapterDir}, ${lora.adapterDir}`);
