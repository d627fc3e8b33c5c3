// Experiment 3, sequential fine-tuning (the paper's continual-learning setting): one adapter on
// SmolLM2-135M-Instruct (quantised base) learns task A, then task B (`--tasks A,B`, default the
// paper's arc-challenge,arc-easy; any two of scripts/fetch-data.mjs' MC_SETS), as multiple
// choice (trained on the right answer, scored by each choice's summed log-likelihood).
// For Kron-LoRA (d_A1 = 2, d_A2 = 4, r = 8) and LoRA (r = 8), all linear layers: accuracy on A's
// test questions after learning A and after learning B (retention: how much of A survives), and
// on B's. The base model's accuracy (no adapter) is the floor.
//
//   npm run experiment -- sequential [--quick] [--tasks A,B] [--train N] [--test N] [--seeds N] [--lr X] [--out DIR]
import { join } from 'node:path';
import { loadModel } from 'kronlora';
import { fetchMultipleChoice, MC_SETS, mcSplit } from '../scripts/fetch-data.mjs';
import { fetchModel } from '../scripts/fetch-models.mjs';
import { experimentArgs, machine, markdownTable, meanSd, progress, trainOptions, writeOutputs } from './lib.mjs';

export async function run(argv, { root, out }) {
  const a = experimentArgs(
    argv,
    { batchSize: '8', lr: '1e-3' },
    { seeds: { type: 'string' }, tasks: { type: 'string', default: 'arc-challenge,arc-easy' } },
  );
  const settings = {
    train: Number(a.train ?? (a.quick ? 240 : 1000)),
    test: Number(a.test ?? (a.quick ? 200 : 400)),
    seeds: Number(a.seeds ?? (a.quick ? 1 : 3)),
    learningRate: Number(a.lr),
    batchSize: Number(a['batch-size']),
    maxLength: 128,
    epochs: 1,
  };
  const model = join(await fetchModel('smollm2'), 'SmolLM2-135M-Instruct.Q4_1.gguf');
  await fetchMultipleChoice();
  const sets = a.tasks.split(',').map((t) => t.trim());
  if (sets.length !== 2 || sets[0] === sets[1]) throw new Error(`--tasks takes two different sets, A,B; got "${a.tasks}"`);
  for (const set of sets) {
    if (!MC_SETS[set]) throw new Error(`--tasks: unknown set "${set}"; known: ${Object.keys(MC_SETS).join(', ')}`);
  }
  const [setA, setB] = sets;
  const task = (set) => ({
    name: set,
    ...mcSplit({ set, dir: join(root, `.cache/data/experiment-${set}`), train: settings.train, test: settings.test }),
  });
  const tasks = { A: task(setA), B: task(setB) };
  const adapters = [
    { name: 'Kron-LoRA 2×4 r8', config: { type: 'kron-lora', kronIn: 2, kronOut: 4, rank: 8, alpha: 16, targetModules: 'all-linear' } },
    { name: 'LoRA r8', config: { type: 'lora', rank: 8, alpha: 16, targetModules: 'all-linear' } },
  ];
  const seeds = Array.from({ length: settings.seeds }, (_, i) => i + 1);
  // Units: the base's two evaluations, then per adapter and seed: train A, evaluate A, train B, evaluate A and B.
  const bar = progress(2 + adapters.length * seeds.length * 5);
  const evaluate = async (m, task) => (await m.evaluate(task.test, { task: 'multiple-choice', maxLength: settings.maxLength })).accuracy;
  const train = (m, task, seed) => m.train({ data: task.train, task: 'multiple-choice', ...trainOptions(settings, seed) }).result;

  const base = await loadModel(model);
  const baseAccuracy = {};
  for (const k of ['A', 'B']) {
    baseAccuracy[k] = await evaluate(base, tasks[k]);
    bar.tick(`base model on ${tasks[k].name}: ${(baseAccuracy[k] * 100).toFixed(1)} %`);
  }
  const runs = [];
  for (const adapter of adapters) {
    for (const seed of seeds) {
      const m = await loadModel(model);
      await m.addAdapter('default', { ...adapter.config, seed });
      const parameters = m.trainableParameters().adapters.default;
      await train(m, tasks.A, seed);
      bar.tick(`${adapter.name} seed ${seed}: learned ${tasks.A.name}`);
      const aAfterA = await evaluate(m, tasks.A);
      bar.tick(`${adapter.name} seed ${seed}: ${tasks.A.name} ${(aAfterA * 100).toFixed(1)} % after A`);
      await train(m, tasks.B, seed);
      bar.tick(`${adapter.name} seed ${seed}: learned ${tasks.B.name}`);
      const aAfterB = await evaluate(m, tasks.A);
      bar.tick(`${adapter.name} seed ${seed}: ${tasks.A.name} ${(aAfterB * 100).toFixed(1)} % after B`);
      const bAfterB = await evaluate(m, tasks.B);
      bar.tick(`${adapter.name} seed ${seed}: ${tasks.B.name} ${(bAfterB * 100).toFixed(1)} % after B`);
      runs.push({ adapter: adapter.name, seed, parameters, aAfterA, aAfterB, bAfterB, retention: aAfterB / aAfterA });
    }
  }
  const pct = (xs) => {
    const s = meanSd(xs.map((x) => x * 100));
    return s.n > 1 ? `${s.mean.toFixed(1)} ± ${s.sd.toFixed(1)}` : s.mean.toFixed(1);
  };
  const rows = adapters.map((adapter) => {
    const rs = runs.filter((r) => r.adapter === adapter.name);
    return [
      adapter.name,
      rs[0].parameters.toLocaleString('en-US'),
      pct(rs.map((r) => r.aAfterA)),
      pct(rs.map((r) => r.aAfterB)),
      pct(rs.map((r) => r.retention)),
      pct(rs.map((r) => r.bAfterB)),
    ];
  });
  rows.unshift(['base model (no adapter)', '0', (baseAccuracy.A * 100).toFixed(1), '', '', (baseAccuracy.B * 100).toFixed(1)]);
  const table = markdownTable(
    [
      'adapter',
      'trainable parameters',
      `${tasks.A.name} % after A`,
      `${tasks.A.name} % after B`,
      'retention % (after B / after A)',
      `${tasks.B.name} % after B`,
    ],
    rows,
  );
  console.log(
    `\n${table}\n(${settings.test} test questions per task; ${settings.seeds > 1 ? `mean ± sd over ${settings.seeds} seeds` : 'one seed'})`,
  );
  const result = {
    experiment: 'sequential',
    date: new Date().toISOString(),
    machine: machine(),
    durationSeconds: bar.seconds(),
    settings,
    model: 'SmolLM2-135M-Instruct Q4_1 (quantised base)',
    tasks: { A: tasks.A.name, B: tasks.B.name },
    baseAccuracy,
    runs,
    table,
  };
  writeOutputs(out, result);
  return result;
}
