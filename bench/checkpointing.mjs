// Gradient checkpointing's memory and time: peak resident memory and median step seconds of
// short Kron-LoRA training runs (d_A1 = 2, d_A2 = 4, r = 8, all linear layers) with and without
// `gradientCheckpointing`, on all-MiniLM-L6-v2 (classification, batch 16 × 128 tokens) and
// SmolLM2-135M Q4_1 (causal LM, batch 8 × 256 tokens), on long IMDB reviews. Every run is a fresh
// process (`training-child.mjs`: peak RSS is the process's); the two settings alternate round by round. Prints the
// runs and medians; writes bench/results/checkpointing.json.
//
//   npm run bench:checkpointing [-- --rounds 2] [--steps 4] [--only minilm|smollm2]
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const { values: a } = parseArgs({
  options: {
    rounds: { type: 'string', default: '2' },
    steps: { type: 'string', default: '4' },
    only: { type: 'string' },
  },
});
const setups = {
  minilm: { model: '.cache/models/minilm', task: 'sequence-classification', batch: 16, maxLength: 128 },
  // The f32 base, as measured before quantised GGUF weights became the default (bench/quantized.mjs
  // measures both).
  smollm2: {
    model: '.cache/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf',
    task: 'causal-lm',
    batch: 8,
    maxLength: 256,
    loadOptions: { quantized: false },
  },
};

const [rounds, steps] = [Number(a.rounds), Number(a.steps)];
if (!(rounds >= 1 && steps >= 2)) throw new Error('--rounds ≥ 1 and --steps ≥ 2');
const { fetchImdb, imdbSplit } = await import('../scripts/fetch-data.mjs');
const { fetchModel } = await import('../scripts/fetch-models.mjs');
await fetchModel('minilm');
await fetchModel('smollm2');
await fetchImdb();
// Reviews of 250 words or more: longer than 256 tokens, so every batch is full length.
const { train: split } = imdbSplit({ dir: join(root, '.cache/data/bench-train'), train: 4000, test: 10 });
const long = readFileSync(split, 'utf8')
  .split('\n')
  .filter((l) => l && JSON.parse(l).text.split(' ').length >= 250);
if (long.length < steps * 16) throw new Error(`only ${long.length} long reviews; lower --steps`);
writeFileSync(join(root, '.cache/data/bench-checkpointing.jsonl'), `${long.join('\n')}\n`);

const runs = [];
const names = a.only ? a.only.split(',') : Object.keys(setups);
for (let round = 1; round <= rounds; round++) {
  for (const setup of names) {
    for (const checkpointing of [false, true]) {
      const s = setups[setup];
      const child = {
        ...s,
        model: join(root, s.model),
        steps,
        data: join(root, '.cache/data/bench-checkpointing.jsonl'),
        trainOptions: { gradientCheckpointing: checkpointing },
      };
      const out = execFileSync(process.execPath, [join(here, 'training-child.mjs'), JSON.stringify(child)], {
        encoding: 'utf8',
        maxBuffer: 1 << 26,
      });
      const r = { round, setup, checkpointing, ...JSON.parse(out.trim().split('\n').at(-1)) };
      runs.push(r);
      console.log(
        `${setup} checkpointing=${checkpointing}: peak RSS ${r.peakRssMiB.toFixed(0)} MiB (after load ${r.rssAfterLoadMiB.toFixed(0)}), step ${r.medianStepSeconds.toFixed(2)} s, losses ${r.losses.map((l) => l.toFixed(4)).join(' ')}`,
      );
    }
  }
}
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor((xs.length - 1) / 2)];
const summary = names.flatMap((setup) =>
  [false, true].map((checkpointing) => {
    const rs = runs.filter((r) => r.setup === setup && r.checkpointing === checkpointing);
    return {
      setup,
      ...setups[setup],
      checkpointing,
      peakRssMiB: median(rs.map((r) => r.peakRssMiB)),
      rssAfterLoadMiB: median(rs.map((r) => r.rssAfterLoadMiB)),
      medianStepSeconds: median(rs.map((r) => r.medianStepSeconds)),
    };
  }),
);
console.log('\nmodel    | batch    | checkpointing | peak RSS MiB | training memory MiB (peak − after load) | step s');
for (const s of summary)
  console.log(
    `${s.setup.padEnd(8)} | ${`${s.batch} × ${s.maxLength}`.padEnd(8)} | ${String(s.checkpointing).padEnd(13)} | ${s.peakRssMiB.toFixed(0).padStart(12)} | ${(s.peakRssMiB - s.rssAfterLoadMiB).toFixed(0).padStart(39)} | ${s.medianStepSeconds.toFixed(2)}`,
  );
const cpuModel = cpus()[0]?.model ?? 'unknown';
const isa = /avx512f/.test(readFileSync('/proc/cpuinfo', 'utf8')) ? 'AVX-512' : 'AVX2';
console.log(`\n${cpuModel} (${isa}), ${cpus().length} threads`);
const dir = join(here, 'results');
mkdirSync(dir, { recursive: true });
const file = join(dir, 'checkpointing.json');
writeFileSync(
  `${file}.tmp-${process.pid}`,
  JSON.stringify({ date: new Date().toISOString(), cpu: cpuModel, isa, steps, rounds, runs, summary }, null, 2),
);
renameSync(`${file}.tmp-${process.pid}`, file);
console.log(`written: ${file}`);
