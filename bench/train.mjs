// Training and evaluation throughput side by side: kronlora (Kron-LoRA d_A1=2 d_A2=4 r=8 and
// LoRA r=16) against PyTorch + PEFT (LoRA r=16 and LoKr r=8 factor 2) when a Python with torch,
// transformers and peft is given. all-MiniLM-L6-v2 with a classification head, all linear
// layers adapted, IMDB reviews, full batches of 16 × 128 tokens, both systems on the same number
// of threads. Every run is a fresh process; the systems' runs are interleaved round by round so
// background load hits them alike. Prints each run, the medians and the ratios, the CPU and its
// vector ISA; writes bench/results/train.json.
//
//   npm run bench:train [-- --python /path/to/python] [--rounds 3] [--steps 8] [--warmup 2]
//                          [--threads 2] [--backend native|wasm|native,wasm] [--only kron-lora,lora]
//
// `--backend native,wasm --threads 1` compares the WASM core with the native addon on one thread
// (WASM has no threads here), the two interleaved like the other systems.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { fetchImdb, imdbSplit } from '../scripts/fetch-data.mjs';
import { fetchModel } from '../scripts/fetch-models.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { values: a } = parseArgs({
  options: {
    python: { type: 'string' },
    rounds: { type: 'string', default: '3' },
    steps: { type: 'string', default: '8' },
    warmup: { type: 'string', default: '2' },
    threads: { type: 'string', default: '2' },
    batch: { type: 'string', default: '16' },
    'max-length': { type: 'string', default: '128' },
    eval: { type: 'string', default: '64' },
    backend: { type: 'string', default: 'native' },
    only: { type: 'string' },
  },
});
const n = (k) => {
  const v = Number(a[k]);
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${k} must be a positive integer, got ${a[k]}`);
  return v;
};
const [rounds, steps, warmup, threads, batch, maxLength, evalCount] = [
  'rounds',
  'steps',
  'warmup',
  'threads',
  'batch',
  'max-length',
  'eval',
].map(n);

const model = await fetchModel('minilm');
const dataDir = join(here, '..', '.cache', 'data', 'bench-train');
const needed = (warmup + steps) * batch + evalCount;
await fetchImdb();
// Only reviews of 200 words or more, which are longer than maxLength tokens: every batch is a
// full batch × maxLength in both systems, whatever order each one batches in.
const { train: split } = imdbSplit({ dir: dataDir, train: needed * 4, test: 10 });
const long = readFileSync(split, 'utf8')
  .split('\n')
  .filter((l) => l && JSON.parse(l).text.split(' ').length >= 200);
if (long.length < needed) throw new Error(`only ${long.length} long reviews; lower --steps or --eval`);
const dataFile = join(dataDir, 'long.jsonl');
writeFileSync(dataFile, `${long.slice(0, needed).join('\n')}\n`);

const median = (xs) => {
  const s = [...xs].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

// One kronlora run in a fresh Node process.
const kronloraChild = `
import { readFileSync } from 'node:fs';
import { withBackend } from 'kronlora';
const o = JSON.parse(process.env.BENCH);
const api = withBackend(o.backend);
const records = readFileSync(o.data, 'utf8').split('\\n').filter(Boolean).map((l) => JSON.parse(l));
const model = await api.loadModel(o.model, { task: 'sequence-classification', numLabels: 2 });
const adapter = o.adapter === 'kron-lora'
  ? { type: 'kron-lora', rank: 8, alpha: 16, kronIn: 2, kronOut: 4, targetModules: 'all-linear' }
  : { type: 'lora', rank: 16, alpha: 32, targetModules: 'all-linear' };
await model.addAdapter('bench', adapter);
const total = o.warmup + o.steps;
const run = model.train({
  data: records.slice(0, total * o.batch), validationSplit: 0, epochs: 1, maxSteps: total, batchSize: o.batch,
  maxLength: o.maxLength, learningRate: 1e-3, logEvery: 1, seed: 1,
});
const stepSeconds = [];
for await (const e of run) if (e.type === 'step' && e.step > o.warmup) stepSeconds.push(o.batch / e.examplesPerSecond);
await run.result;
const kib = (key) => parseInt(readFileSync('/proc/self/status', 'utf8').split('\\n').find((l) => l.startsWith(key + ':')).slice(key.length + 1));
const trainPeak = kib('VmHWM') / 1024;
const heldOut = records.slice(total * o.batch, total * o.batch + o.eval);
await model.evaluate(heldOut.slice(0, o.batch), { batchSize: o.batch, maxLength: o.maxLength });
const t0 = performance.now();
await model.evaluate(heldOut, { batchSize: o.batch, maxLength: o.maxLength });
const evalSeconds = (performance.now() - t0) / 1000;
const sorted = [...stepSeconds].sort((x, y) => x - y);
console.log(JSON.stringify({
  system: 'kronlora-' + o.backend, adapter: o.adapter, trainable: model.trainableParameters().trainable, stepSeconds,
  examplesPerSecond: o.batch / sorted[Math.floor(sorted.length / 2)], evalExamplesPerSecond: heldOut.length / evalSeconds,
  peakRssMiB: trainPeak,
}));
`;

const common = { model, data: dataFile, steps, warmup, batch, maxLength, eval: evalCount };
const env = { ...process.env, RAYON_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) };
const backends = a.backend.split(',');
for (const b of backends) if (b !== 'native' && b !== 'wasm') throw new Error(`--backend takes native, wasm or both, got ${b}`);
// Native runs keep the plain keys the ratios below name; WASM ones are prefixed.
const systems = backends.flatMap((backend) =>
  ['kron-lora', 'lora'].map((adapter) => ({
    name: backend === 'native' ? `kronlora ${adapter}` : `kronlora-${backend} ${adapter}`,
    key: backend === 'native' ? adapter : `${backend}-${adapter}`,
    run: () => [process.execPath, ['--input-type=module', '-e', kronloraChild], { BENCH: JSON.stringify({ ...common, backend, adapter }) }],
  })),
);
if (a.python) {
  for (const adapter of ['lora', 'lokr']) {
    systems.push({
      name: `pytorch-peft ${adapter}`,
      key: `peft-${adapter}`,
      run: () => [
        a.python,
        [
          join(here, 'peft_train.py'),
          '--model',
          model,
          '--data',
          dataFile,
          '--adapter',
          adapter,
          ...[
            '--steps',
            steps,
            '--warmup',
            warmup,
            '--batch',
            batch,
            '--max-length',
            maxLength,
            '--threads',
            threads,
            '--eval',
            evalCount,
          ].map(String),
        ],
        {
          HF_HUB_OFFLINE: '1',
          TRANSFORMERS_VERBOSITY: 'error',
          HF_HUB_DISABLE_PROGRESS_BARS: '1',
          TQDM_DISABLE: '1',
          PYTHONWARNINGS: 'ignore',
        },
      ],
    });
  }
}
const only = a.only ? new Set(a.only.split(',')) : null;
const chosen = systems.filter((s) => !only || only.has(s.key));

const cpuModel = cpus()[0]?.model ?? 'unknown CPU';
const flags =
  readFileSync('/proc/cpuinfo', 'utf8')
    .match(/^flags\s*:(.*)$/m)?.[1]
    .split(' ') ?? [];
const isa = flags.includes('avx512f') ? 'AVX-512' : flags.includes('avx2') ? 'AVX2' : 'no AVX2';
console.log(
  `${cpuModel} (${isa}), ${cpus().length} logical CPUs; ${threads} threads; batch ${batch} × ${maxLength}; ${steps} timed steps after ${warmup}; ${rounds} rounds`,
);

const runs = [];
for (let round = 1; round <= rounds; round++) {
  for (const s of chosen) {
    const [cmd, args, extra] = s.run();
    const out = execFileSync(cmd, args, { encoding: 'utf8', env: { ...env, ...extra }, stdio: ['ignore', 'pipe', 'inherit'] });
    const r = { round, key: s.key, ...JSON.parse(out.trim().split('\n').pop()) };
    runs.push(r);
    console.log(
      `round ${round}  ${s.name.padEnd(20)} train ${r.examplesPerSecond.toFixed(2).padStart(6)} ex/s   eval ${r.evalExamplesPerSecond.toFixed(1).padStart(6)} ex/s   peak ${r.peakRssMiB.toFixed(0).padStart(5)} MiB   trainable ${r.trainable}`,
    );
  }
}

const summary = Object.fromEntries(
  chosen.map((s) => {
    const mine = runs.filter((r) => r.key === s.key);
    return [
      s.key,
      {
        name: s.name,
        trainable: mine[0].trainable,
        examplesPerSecond: median(mine.map((r) => r.examplesPerSecond)),
        evalExamplesPerSecond: median(mine.map((r) => r.evalExamplesPerSecond)),
        peakRssMiB: median(mine.map((r) => r.peakRssMiB)),
      },
    ];
  }),
);
console.log('\n| system | trainable | train (ex/s) | eval (ex/s) | peak RSS (MiB) |\n|---|---|---|---|---|');
for (const s of Object.values(summary)) {
  console.log(
    `| ${s.name} | ${s.trainable.toLocaleString('en')} | ${s.examplesPerSecond.toFixed(2)} | ${s.evalExamplesPerSecond.toFixed(1)} | ${s.peakRssMiB.toFixed(0)} |`,
  );
}
const ratio = (x, y, field) => (summary[x] && summary[y] ? summary[x][field] / summary[y][field] : undefined);
const ratios = {
  'kronlora Kron-LoRA / LoRA (train)': ratio('kron-lora', 'lora', 'examplesPerSecond'),
  'PEFT LoKr / LoRA (train)': ratio('peft-lokr', 'peft-lora', 'examplesPerSecond'),
  'kronlora LoRA / PEFT LoRA (train)': ratio('lora', 'peft-lora', 'examplesPerSecond'),
  'kronlora Kron-LoRA / PEFT LoKr (train)': ratio('kron-lora', 'peft-lokr', 'examplesPerSecond'),
  'kronlora / PyTorch (eval, LoRA)': ratio('lora', 'peft-lora', 'evalExamplesPerSecond'),
  'kronlora / PyTorch (peak RSS, LoRA)': ratio('lora', 'peft-lora', 'peakRssMiB'),
  'WASM / native (train, Kron-LoRA)': ratio('wasm-kron-lora', 'kron-lora', 'examplesPerSecond'),
  'WASM / native (train, LoRA)': ratio('wasm-lora', 'lora', 'examplesPerSecond'),
  'WASM / native (eval, Kron-LoRA)': ratio('wasm-kron-lora', 'kron-lora', 'evalExamplesPerSecond'),
};
console.log('');
for (const [k, v] of Object.entries(ratios)) if (v !== undefined) console.log(`${k}: ${v.toFixed(2)}`);

const outDir = join(here, 'results');
mkdirSync(outDir, { recursive: true });
const file = join(outDir, 'train.json');
writeFileSync(
  `${file}.tmp-${process.pid}`,
  JSON.stringify(
    { date: new Date().toISOString(), cpu: cpuModel, isa, threads, batch, maxLength, steps, warmup, rounds, runs, summary, ratios },
    null,
    2,
  ),
);
renameSync(`${file}.tmp-${process.pid}`, file);
console.log(`\nwritten: ${file}`);
