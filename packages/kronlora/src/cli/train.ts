/** `kronlora train`: fine-tune an adapter (and head) on a JSONL file; Ctrl-C checkpoints. */
import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { TrainResult, TrainTask } from '../training.js';
import { type Io, count, duration, metricsLine } from './output.js';
import { trainingProgress } from './progress.js';
import {
  type AdapterFlags,
  type CommonFlags,
  Interrupted,
  adapterConfig,
  adapterOptions,
  checkFile,
  common,
  int,
  loadModelFor,
  num,
  trainingSetup,
} from './shared.js';

interface TrainFlags extends CommonFlags, AdapterFlags {
  data: string;
  validation?: string;
  task?: TrainTask;
  epochs: string;
  batchSize: string;
  lr: string;
  maxLength?: string;
  gradientCheckpointing?: boolean;
  seed: string;
  evalEvery?: string;
  out: string;
  resume?: string;
  progress: boolean;
}

export function trainCommand(root: Command, io: Io): void {
  const cmd = root.command('train').description('fine-tune a Kron-LoRA or LoRA adapter on a JSONL dataset');
  common(cmd)
    .requiredOption('--data <file>', 'training records, one JSON object per line')
    .option('--validation <file>', 'validation records (default: 10 % of --data, held out with the seed)')
    .option('--task <task>', 'classification | causal-lm | multiple-choice (default: classification for encoders, causal-lm for decoders)')
    .option('--epochs <n>', 'passes over the data', '1')
    .option('--batch-size <n>', 'examples per step', '16')
    .option('--lr <x>', 'peak learning rate (linear warmup over 6 %, then linear decay)', '1e-3')
    .option('--max-length <n>', "tokens per example at most (default: 128, or the model's context if shorter)")
    .option(
      '--gradient-checkpointing',
      'recompute each block in backward instead of keeping its activations (less memory, ~1 more forward of time)',
    )
    .option('--seed <n>', 'seed of shuffling, the split, dropout and initialisation', '0')
    .option('--eval-every <n>', 'evaluate every n steps (default: each epoch)')
    .requiredOption('--out <dir>', 'output directory: checkpoints and the final adapter (out/adapter); nothing else in it is touched')
    .option('--resume <dir>', 'continue the run in this output or checkpoint directory exactly')
    .option('--no-progress', 'no progress display');
  adapterOptions(cmd).addHelpText(
    'after',
    `
Records: classification {"text": "...", "label": 0 | "positive"}; causal-lm {"text"}, {"prompt", "completion"}
or {"messages": [{"role", "content"}]}; multiple-choice {"question", "choices": [...], "answer": 0}.

Examples:
  kronlora train --model .cache/models/minilm --data train.jsonl --out runs/kron
  kronlora train --model .cache/models/minilm --data train.jsonl --adapter lora --rank 16 --out runs/lora
  kronlora train --model smollm2.gguf --task causal-lm --data chat.jsonl --targets q_proj,v_proj --lr 2e-4 --out runs/chat
  kronlora train ... --out runs/kron --resume runs/kron      (after Ctrl-C)`,
  );
  cmd.action(async (f: TrainFlags) => {
    checkFile('data', f.data);
    if (f.validation) checkFile('validation', f.validation);
    checkFile('model', f.model);
    const adapter = adapterConfig(f);
    const setup = trainingSetup(f, f.task, f.data);
    const task = setup.task;
    const model = await loadModelFor(f, setup.modelOptions);
    await model.addAdapter('default', adapter);
    const report = model.trainableParameters();
    const out = resolve(f.out);
    if (!f.json) {
      io.out(`kronlora train · ${model.architecture} · ${model.backend} backend`);
      io.out(
        `  ${adapter.type} adapter on ${report.adaptedModules.default} modules: ${count(report.trainable)} trainable of ${count(report.total)} (${report.percentage.toFixed(3)} %)`,
      );
    }
    const run = model.train({
      data: f.data,
      ...(f.validation ? { validationData: f.validation } : {}),
      task,
      epochs: int('epochs', f.epochs),
      batchSize: int('batch-size', f.batchSize),
      learningRate: num('lr', f.lr),
      ...(f.maxLength ? { maxLength: int('max-length', f.maxLength) } : {}),
      ...(f.gradientCheckpointing ? { gradientCheckpointing: true } : {}),
      seed: num('seed', f.seed),
      ...(f.evalEvery ? { evalEvery: int('eval-every', f.evalEvery) } : {}),
      outputDir: out,
      ...(f.resume ? { resumeFrom: resolve(f.resume) } : {}),
    });
    // Ctrl-C: stop after the current step with a checkpoint; a second Ctrl-C exits at once.
    let interrupts = 0;
    const onSigint = () => {
      interrupts++;
      if (interrupts > 1) process.exit(130);
      progress.note('  stopping after the current step (Ctrl-C again to quit at once)…');
      run.cancel();
    };
    process.on('SIGINT', onSigint);
    const progress = trainingProgress(io, f.progress && !f.json);
    let result: TrainResult;
    try {
      for await (const e of run) progress.event(e);
      result = await run.result;
    } finally {
      progress.stop();
      process.off('SIGINT', onSigint);
    }
    if (f.json) {
      io.out(
        JSON.stringify({ command: 'train', model: f.model, backend: model.backend, task, adapter, trainableParameters: report, result }),
      );
    } else {
      io.out(
        `  ${result.reason} after ${result.step}/${result.totalSteps} steps in ${duration(result.seconds)} (${result.examplesPerSecond.toFixed(1)} examples/s)`,
      );
      if (result.trainLoss !== null) io.out(`  last training loss ${result.trainLoss.toFixed(4)}`);
      if (result.metrics)
        io.out(`  validation: ${metricsLine(result.metrics)}${result.bestStep ? ` (best, step ${result.bestStep})` : ''}`);
      if (result.adapterDir) io.out(`  adapter: ${result.adapterDir}`);
    }
    if (result.reason === 'cancelled') {
      io.err(`kronlora: interrupted at step ${result.step}; checkpoint ${result.checkpoint}`);
      io.err(`  resume with the same command plus: --resume ${out}`);
      throw new Interrupted();
    }
  });
}
