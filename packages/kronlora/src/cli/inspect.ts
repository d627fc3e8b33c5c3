/** `kronlora info` (what a model is and where adapters would go) and `kronlora eval`. */
import type { Command } from 'commander';
import type { TrainTask } from '../training.js';
import { type Io, count, duration, metricsLine } from './output.js';
import {
  type AdapterFlags,
  type CommonFlags,
  adapterConfig,
  adapterOptions,
  checkFile,
  common,
  int,
  loadFor,
  loadModelFor,
  savedAdapter,
  trainingSetup,
} from './shared.js';

interface InfoFlags extends CommonFlags, AdapterFlags {
  task?: string;
  numLabels?: string;
  modules: boolean;
}

export function infoCommand(root: Command, io: Io): void {
  const cmd = root.command('info').description('architecture, parameter counts, and where an adapter would go');
  common(cmd)
    .option('--task <task>', "embedding | sequence-classification | causal-lm (default: the model family's own)")
    .option('--num-labels <n>', 'classes of a sequence-classification head (default 2)')
    .option('--modules', 'list every adapted module');
  adapterOptions(cmd).addHelpText(
    'after',
    `
Examples:
  kronlora info --model .cache/models/minilm
  kronlora info --model .cache/models/minilm --task sequence-classification --adapter lora --rank 16
  kronlora info --model smollm2.gguf --targets q_proj,v_proj --modules --json`,
  );
  cmd.action(async (f: InfoFlags) => {
    const task = f.task as 'embedding' | 'sequence-classification' | 'causal-lm' | undefined;
    const model = await loadFor(f, task, int('num-labels', f.numLabels));
    const base = model.trainableParameters();
    const adapter = adapterConfig(f);
    await model.addAdapter('default', adapter);
    const report = model.trainableParameters();
    const modules = model.modules();
    const adapted = modules.filter((m) => m.adapters.includes('default'));
    // How the frozen projections are held: { F32: n } or the GGUF block types kept quantised.
    const weightTypes: Record<string, number> = {};
    for (const m of modules) weightTypes[m.weightType] = (weightTypes[m.weightType] ?? 0) + 1;
    const kinds = [...new Set(adapted.map((m) => m.name.split('.').at(-1)!))];
    // The Kronecker factors each module got (the core's defaults, or a divisor where they do not fit).
    const shapes = [
      ...new Set(
        adapted
          .map((m) => m.factors.default)
          .filter((f) => f.kronIn)
          .map((f) => `d_A1 ${f.kronIn}, d_A2 ${f.kronOut}`),
      ),
    ];
    if (f.json) {
      io.out(
        JSON.stringify({
          command: 'info',
          model: f.model,
          backend: model.backend,
          device: model.device,
          architecture: model.architecture,
          task: model.task,
          adapter,
          baseParameters: base.total - base.trainable,
          trainableParameters: report,
          linearModules: modules.length,
          weightTypes,
          adaptedModules: adapted.map((m) => m.name),
        }),
      );
      return;
    }
    io.out(`${f.model}`);
    io.out(`  architecture   ${model.architecture}`);
    io.out(`  task           ${model.task}`);
    io.out(`  device         ${model.device} (${model.backend} backend)`);
    io.out(`  parameters     ${count(base.total - base.trainable)} frozen${base.head ? ` + ${count(base.head)} head` : ''}`);
    const held = Object.entries(weightTypes).map(([type, n]) => `${n} ${type}`);
    io.out(`  linear modules ${modules.length} (${held.join(', ')})`);
    io.out(
      `  ${adapter.type} (rank ${adapter.rank}, alpha ${adapter.alpha}${shapes.length ? `, ${shapes.join(' / ')}` : ''}) on ${adapted.length} modules: ${kinds.join(', ')}`,
    );
    io.out(
      `  trainable      ${count(report.trainable)} of ${count(report.total)} (${report.percentage.toFixed(3)} %): adapter ${count(report.adapters.default)}${report.head ? `, head ${count(report.head)}` : ''}`,
    );
    if (f.modules) for (const m of adapted) io.out(`    ${m.name} [${m.outFeatures} × ${m.inFeatures}]`);
  });
}

interface EvalFlags extends CommonFlags {
  adapter?: string;
  data: string[];
  task?: TrainTask;
  batchSize: string;
  maxLength?: string;
}

export function evalCommand(root: Command, io: Io): void {
  const cmd = root
    .command('eval')
    .description('evaluate a model, with a saved adapter or as it is (a merged model), on one or more JSONL datasets');
  common(cmd)
    .option(
      '--adapter <dir>',
      'adapter directory (adapter_config.json + adapter_model.safetensors), or the --out directory of kronlora train (its adapter/ is used); without it the model is evaluated as it is',
    )
    .requiredOption('--data <files...>', 'records, one JSON object per line; several files give one row each')
    .option('--task <task>', "classification | causal-lm | multiple-choice (default: the adapter's, else the model family's)")
    .option('--batch-size <n>', 'examples per batch', '32')
    .option('--max-length <n>', "tokens per example at most (default: 128, or the model's context if shorter)")
    .addHelpText(
      'after',
      `
Examples:
  kronlora eval --model .cache/models/minilm --adapter runs/kron/adapter --data test.jsonl
  kronlora eval --model .cache/models/minilm --adapter runs/kron --data test.jsonl      (same: runs/kron/adapter)
  kronlora eval --model smollm2.gguf --adapter runs/arc/adapter --task multiple-choice --data arc.jsonl --json
  kronlora eval --model minilm-imdb --data test.jsonl                       (a merged model: kronlora merge)
  kronlora eval --model .cache/models/minilm --adapter runs/b --data task-a.jsonl task-b.jsonl   (one row per file)`,
    );
  cmd.action(async (f: EvalFlags) => {
    for (const file of f.data) checkFile('data', file);
    const saved = f.adapter === undefined ? undefined : savedAdapter(f, f.adapter);
    const adapter = saved?.dir ?? null;
    // Without an adapter, the head is sized by the (first) data's labels, as training would size it.
    const model = saved
      ? await loadFor(f, saved.task, saved.numLabels)
      : await loadModelFor(f, trainingSetup(f, f.task, f.data[0]).modelOptions);
    const modules = saved ? (await model.loadAdapter(saved.dir)).modules : 0;
    const options = {
      ...(f.task ? { task: f.task } : {}),
      batchSize: int('batch-size', f.batchSize),
      ...(f.maxLength ? { maxLength: int('max-length', f.maxLength) } : {}),
    };
    const results = [];
    for (const data of f.data) {
      // Evaluation reports no progress of its own: say what is running (stderr, not in --json).
      if (!f.json) io.err(`  evaluating ${data} with ${adapter ?? 'no adapter'} (${model.backend} backend)…`);
      const started = performance.now();
      const metrics = await model.evaluate(data, options);
      const seconds = (performance.now() - started) / 1000;
      results.push({ data, metrics });
      if (!f.json)
        io.out(
          `${data}: ${metrics.examples} examples · ${metricsLine(metrics)} · ${duration(seconds)} (${(metrics.examples / seconds).toFixed(1)} examples/s)`,
        );
    }
    if (f.json) {
      // `metrics`: the first file's (the only one's, usually); `results`: one entry per file.
      io.out(
        JSON.stringify({ command: 'eval', model: f.model, adapter, backend: model.backend, modules, metrics: results[0].metrics, results }),
      );
    }
  });
}
