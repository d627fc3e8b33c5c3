// A quantised frozen base against the f32 one: SmolLM2-135M-Instruct Q4_1 loaded with
// `quantized: true` (the CPU default: projections and embeddings stay in their GGUF blocks) and
// `quantized: false` (every weight dequantised to f32), each with gradient checkpointing off and
// on. Each run is a fresh process (`training-child.mjs`): resident memory after loading, peak
// resident memory of a short Kron-LoRA training run (d_A1 = 2, d_A2 = 4, r = 8, all linear layers,
// causal LM, batch 8 × 256 tokens of long IMDB reviews), training tokens per second (median step),
// and greedy generation tokens per second afterwards. The settings alternate within each round.
// Prints the runs and medians; writes bench/results/quantized.json.
//
//   npm run bench:quantized [-- --rounds 2] [--steps 3]
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const { values: a } = parseArgs({
  options: { rounds: { type: 'string', default: '1' }, steps: { type: 'string', default: '3' } },
});
const [rounds, steps] = [Number(a.rounds), Number(a.steps)];
if (!(rounds >= 1 && steps >= 2)) throw new Error('--rounds ≥ 1 and --steps ≥ 2');
const { fetchImdb, imdbSplit } = await import('../scripts/fetch-data.mjs');
const { fetchModel } = await import('../scripts/fetch-models.mjs');
const model = join(await fetchModel('smollm2'), 'SmolLM2-135M-Instruct.Q4_1.gguf');
await fetchImdb();
const { train: split } = imdbSplit({ dir: join(root, '.cache/data/bench-train'), train: 4000, test: 10 });
const [batch, maxLength] = [8, 256];
// Reviews of 250 words or more: longer than 256 tokens, so every batch is full length.
const long = readFileSync(split, 'utf8')
  .split('\n')
  .filter((l) => l && JSON.parse(l).text.split(' ').length >= 250);
if (long.length < steps * batch) throw new Error(`only ${long.length} long reviews; lower --steps`);
const data = join(root, '.cache/data/bench-quantized.jsonl');
writeFileSync(data, `${long.join('\n')}\n`);

const settings = [
  { quantized: true, checkpointing: false },
  { quantized: false, checkpointing: false },
  { quantized: true, checkpointing: true },
  { quantized: false, checkpointing: true },
];
const runs = [];
for (let round = 1; round <= rounds; round++) {
  for (const { quantized, checkpointing } of settings) {
    const child = {
      model,
      task: 'causal-lm',
      batch,
      maxLength,
      steps,
      data,
      loadOptions: { quantized },
      trainOptions: { gradientCheckpointing: checkpointing },
      generateTokens: 32,
    };
    const out = execFileSync(process.execPath, [join(here, 'training-child.mjs'), JSON.stringify(child)], {
      encoding: 'utf8',
      maxBuffer: 1 << 26,
    });
    const r = { round, quantized, checkpointing, ...JSON.parse(out.trim().split('\n').at(-1)) };
    runs.push(r);
    console.log(
      `quantized=${quantized} checkpointing=${checkpointing}: after load ${r.rssAfterLoadMiB.toFixed(0)} MiB, peak ${r.peakRssMiB.toFixed(0)} MiB, ` +
        `training ${r.trainTokensPerSecond.toFixed(0)} tokens/s (step ${r.medianStepSeconds.toFixed(2)} s), generation ${r.generateTokensPerSecond.toFixed(1)} tokens/s, ` +
        `losses ${r.losses.map((l) => l.toFixed(4)).join(' ')}`,
    );
  }
}
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor((xs.length - 1) / 2)];
const summary = settings.map(({ quantized, checkpointing }) => {
  const rs = runs.filter((r) => r.quantized === quantized && r.checkpointing === checkpointing);
  const m = (k) => median(rs.map((r) => r[k]));
  return {
    quantized,
    checkpointing,
    rssAfterLoadMiB: m('rssAfterLoadMiB'),
    peakRssMiB: m('peakRssMiB'),
    trainTokensPerSecond: m('trainTokensPerSecond'),
    generateTokensPerSecond: m('generateTokensPerSecond'),
  };
});
console.log('\nbase      | checkpointing | RSS after load MiB | peak training RSS MiB | training tokens/s | generation tokens/s');
for (const s of summary)
  console.log(
    `${(s.quantized ? 'Q4_1' : 'f32').padEnd(9)} | ${String(s.checkpointing).padEnd(13)} | ${s.rssAfterLoadMiB.toFixed(0).padStart(18)} | ${s.peakRssMiB.toFixed(0).padStart(21)} | ${s.trainTokensPerSecond.toFixed(0).padStart(17)} | ${s.generateTokensPerSecond.toFixed(1).padStart(19)}`,
  );
const cpuModel = cpus()[0]?.model ?? 'unknown';
const isa = /avx512f/.test(readFileSync('/proc/cpuinfo', 'utf8')) ? 'AVX-512' : 'AVX2';
console.log(`\n${cpuModel} (${isa}), ${cpus().length} threads`);
const dir = join(here, 'results');
mkdirSync(dir, { recursive: true });
const file = join(dir, 'quantized.json');
writeFileSync(
  `${file}.tmp-${process.pid}`,
  JSON.stringify({ date: new Date().toISOString(), cpu: cpuModel, isa, steps, rounds, batch, maxLength, runs, summary }, null, 2),
);
renameSync(`${file}.tmp-${process.pid}`, file);
console.log(`written: ${file}`);
