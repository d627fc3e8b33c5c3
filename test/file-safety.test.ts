// kronlora replaces or removes only what it wrote and recognises as its own, on both backends and
// in the CLI: saveAdapter into a folder with other files, onto a file, a link, another tool's
// adapter; checkpoint rotation and resume among foreign checkpoint-* entries; edited checkpoint
// states; `kronlora eval --adapter <train --out dir>`. Directory trees are compared before/after.
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KronLoraError, type ClassificationRecord } from 'kronlora';
import { backends, on } from './backends.js';
import { tinyBertDir } from './tiny-models.js';

const bertDir = tinyBertDir(7);
const bin = new URL('../packages/kronlora/bin/kronlora.js', import.meta.url).pathname;
const LORA = { type: 'lora', rank: 4, alpha: 8, targetModules: 'all-linear' } as const;
const tmp = () => mkdtempSync(join(tmpdir(), 'kronlora-safety-'));

function reviews(n: number): ClassificationRecord[] {
  return Array.from({ length: n }, (_, i) =>
    i % 2 === 0
      ? { text: ['good fun', 'great film', 'very good'][i % 3], label: 'pos' }
      : { text: ['bad plot', 'not a movie', 'bad'][i % 3], label: 'neg' },
  );
}

/** Every entry under `root`, links not followed: relative path → what it is and holds. */
function tree(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      const stat = lstatSync(path);
      const rel = relative(root, path);
      if (stat.isSymbolicLink()) out[rel] = `link → ${readlinkSync(path)}`;
      else if (stat.isDirectory()) {
        out[rel] = 'dir';
        walk(path);
      } else out[rel] = `file ${readFileSync(path).toString('base64')}`;
    }
  };
  walk(root);
  return out;
}

/** What `after` added or changed relative to `before`, and what went. */
function changes(before: Record<string, string>, after: Record<string, string>) {
  return {
    changed: Object.keys(after)
      .filter((k) => before[k] !== after[k])
      .sort(),
    gone: Object.keys(before).filter((k) => !(k in after)),
  };
}

function write(path: string, text: string) {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
}

/** A Hugging Face PEFT adapter (no `kronlora` block). */
function peftAdapter(dir: string) {
  write(join(dir, 'adapter_config.json'), '{"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":["query","value"]}');
  write(join(dir, 'adapter_model.safetensors'), 'their weights');
}

async function rejection(promise: Promise<unknown>): Promise<KronLoraError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, 'expected a rejection').toBeInstanceOf(KronLoraError);
  return error as KronLoraError;
}

describe.each(backends)('file safety on %s', (name) => {
  const api = on(name);
  const classifier = async (seed = 1) => {
    const model = await api.loadModel(bertDir, { task: 'sequence-classification', numLabels: 2, seed });
    await model.addAdapter('default', LORA);
    return model;
  };

  it('saveAdapter keeps the files around it and refuses to replace what it did not write', async () => {
    const root = tmp();
    const model = await classifier();
    await model.train({ data: reviews(16), epochs: 1, batchSize: 8, learningRate: 5e-3 }).result;

    const project = join(root, 'project');
    write(join(project, 'notes.txt'), 'my notes');
    write(join(project, 'sub', 'data.csv'), 'a,b\n1,2\n');
    const before = tree(root);
    await model.saveAdapter(project);
    const after = tree(root);
    expect(changes(before, after)).toEqual({ changed: ['project/adapter_config.json', 'project/adapter_model.safetensors'], gone: [] });
    const texts = ['good fun', 'bad plot'];
    const fresh = await api.loadModel(bertDir, { task: 'sequence-classification', numLabels: 2, seed: 9 });
    await fresh.loadAdapter(project);
    expect(await fresh.classify(texts)).toEqual(await model.classify(texts));

    // Saving again over its own adapter works and touches nothing else.
    await model.saveAdapter(project);
    expect(changes(after, tree(root))).toEqual({ changed: [], gone: [] });

    write(join(root, 'file.bin'), 'precious bytes');
    write(join(root, 'elsewhere', 'keep.txt'), 'keep');
    symlinkSync(join(root, 'elsewhere'), join(root, 'link'));
    peftAdapter(join(root, 'peft'));
    const untouched = tree(root);
    for (const [target, says] of [
      ['file.bin', 'is a file, not a directory'],
      ['link', 'is a symbolic link'],
      ['peft', 'adapter_config.json was not written by kronlora'],
    ]) {
      const e = await rejection(model.saveAdapter(join(root, target)));
      expect([e.code, e.message], target).toEqual(['ERR_WOULD_OVERWRITE', expect.stringContaining(says)]);
      expect(e.message).not.toContain('\n');
      expect(tree(root), target).toEqual(untouched);
    }
  });

  it('rotates and resumes only its own checkpoints among foreign checkpoint-* entries', async () => {
    const root = tmp();
    const out = join(root, 'out');
    write(join(out, 'checkpoint-0', 'precious.txt'), 'precious');
    write(join(root, 'elsewhere', 'important.txt'), 'important');
    symlinkSync(join(root, 'elsewhere'), join(out, 'checkpoint-000003'));
    for (const step of [500, 1000]) {
      write(join(out, `checkpoint-${step}`, 'trainer_state.json'), `{"global_step":${step},"epoch":1.0,"log_history":[]}`);
      peftAdapter(join(out, `checkpoint-${step}`));
    }
    const before = tree(root);
    // 2 steps (16 records, batches of 4 accumulated in pairs), a checkpoint after each, keep 1.
    const options = {
      data: reviews(16),
      validationSplit: 0,
      epochs: 1,
      batchSize: 4,
      gradientAccumulation: 2,
      learningRate: 5e-3,
      seed: 2,
      checkpointEvery: 1,
      keepCheckpoints: 1,
      outputDir: out,
    };
    const model = await classifier();
    const result = await model.train(options).result;
    expect([result.reason, result.step, result.checkpoint]).toEqual(['completed', 2, join(out, 'checkpoint-000002')]);
    expect(lstatSync(join(result.checkpoint!, 'trainer_state.json')).isFile()).toBe(true);
    const after = tree(root);
    const { changed, gone } = changes(before, after);
    expect(gone).toEqual([]);
    expect(changed.filter((p) => !p.startsWith('out/checkpoint-000002') && !p.startsWith('out/adapter'))).toEqual([]);
    expect(
      readdirSync(out)
        .filter((n) => n.startsWith('checkpoint-'))
        .sort(),
    ).toEqual(['checkpoint-0', 'checkpoint-000002', 'checkpoint-000003', 'checkpoint-1000', 'checkpoint-500']);

    const resumed = await (await classifier()).train({ ...options, resumeFrom: out }).result;
    expect(resumed.losses).toEqual(result.losses);

    // Checkpoint 3 of a longer run would go where the link is: refused before the first step.
    const run = (await classifier()).train({ ...options, epochs: 2 });
    const events: string[] = [];
    const iterated = (async () => {
      for await (const e of run) events.push(e.type);
    })().catch(() => undefined);
    const e = await rejection(run.result);
    await iterated;
    expect([e.code, e.message]).toEqual(['ERR_WOULD_OVERWRITE', expect.stringContaining('checkpoint-000003 is a symbolic link')]);
    expect(events).toEqual([]);
    expect(tree(root)).toEqual(after);
  });

  it('refuses an edited checkpoint state before training, naming the file and field', async () => {
    const out = tmp();
    const options = {
      data: reviews(16),
      validationSplit: 0,
      epochs: 2,
      batchSize: 4,
      gradientAccumulation: 2,
      learningRate: 5e-3,
      seed: 2,
      outputDir: out,
    };
    const controller = new AbortController();
    const run = (await classifier()).train({ ...options, signal: controller.signal });
    for await (const ev of run) if (ev.type === 'step' && ev.step === 2) controller.abort();
    const cut = await run.result;
    const statePath = join(cut.checkpoint!, 'trainer_state.json');
    const state = readFileSync(statePath, 'utf8');
    for (const [field, value, says] of [
      ['epoch', '1000000000000000', '`epoch` is 1000000000000000'],
      ['batch', '1000000000000000', '`batch` is 1000000000000000'],
      ['totalSteps', '99', '`totalSteps` is 99'],
      ['step', '9223372036854775808', 'written at step'],
    ]) {
      writeFileSync(statePath, state.replace(new RegExp(`"${field}": \\d+`), `"${field}": ${value}`));
      const e = await rejection((await classifier()).train({ ...options, resumeFrom: out }).result);
      expect([e.code, e.message], field).toEqual(['ERR_INVALID_DATA', expect.stringContaining(says)]);
      expect(e.message, field).toContain('trainer_state.json');
    }
  });

  it('the CLI writes by the same rules, and eval finds the adapter in a training --out directory', () => {
    const root = tmp();
    const data = join(root, 'train.jsonl');
    const records = reviews(16).map((r) => JSON.stringify(r));
    write(data, `${records.join('\n')}\n`);
    const cli = (args: string[]) => {
      const r = spawnSync(process.execPath, [bin, ...args, '--backend', name], { encoding: 'utf8' });
      return { code: r.status, stdout: r.stdout, stderr: r.stderr };
    };
    const out = join(root, 'run');
    const t = cli([
      'train',
      '--model',
      bertDir,
      '--data',
      data,
      '--epochs',
      '1',
      '--batch-size',
      '8',
      '--adapter',
      'lora',
      '--rank',
      '4',
      '--out',
      out,
      '--json',
    ]);
    expect(t.code, t.stderr).toBe(0);
    const trained = JSON.parse(t.stdout.trim().split('\n').at(-1)!).result;
    for (const adapter of [out, join(out, 'adapter')]) {
      const e = cli(['eval', '--model', bertDir, '--adapter', adapter, '--data', data, '--json']);
      expect(e.code, e.stderr).toBe(0);
      expect(JSON.parse(e.stdout.trim().split('\n').at(-1)!)).toMatchObject({ adapter: join(out, 'adapter'), metrics: { examples: 16 } });
    }
    expect(trained.adapterDir).toBe(join(out, 'adapter'));
    expect(cli(['eval', '--help']).stdout).toMatch(/or the --out directory of\s+kronlora train/);
    const missing = cli(['eval', '--model', bertDir, '--adapter', root, '--data', data]);
    expect([missing.code, missing.stderr]).toEqual([
      1,
      expect.stringContaining('holds no adapter_config.json (nor adapter/adapter_config.json)'),
    ]);

    // --out onto a file, or onto another tool's adapter: refused, nothing touched.
    write(join(root, 'file.txt'), 'keep me');
    peftAdapter(join(root, 'peft-run', 'adapter'));
    const before = tree(root);
    for (const [target, says] of [
      ['file.txt', 'is a file, not a directory'],
      ['peft-run', 'adapter_config.json was not written by kronlora'],
    ]) {
      const r = cli(['train', '--model', bertDir, '--data', data, '--epochs', '1', '--out', join(root, target)]);
      expect([r.code, r.stderr], target).toEqual([1, expect.stringContaining(`[ERR_WOULD_OVERWRITE]`)]);
      expect(r.stderr).toContain(says);
    }
    expect(tree(root)).toEqual(before);
  });
});

describe('the demo', () => {
  it('refuses an --out folder with files it did not write, touching nothing', () => {
    const root = tmp();
    write(join(root, 'mine', 'results.json'), '{"my":"results"}');
    write(join(root, 'mine', 'loss.svg'), '<svg/>');
    const before = tree(root);
    const demo = new URL('../examples/demo.mjs', import.meta.url).pathname;
    const r = spawnSync(
      process.execPath,
      [demo, '--model', bertDir, '--train-file', 'x.jsonl', '--test-file', 'y.jsonl', '--out', join(root, 'mine')],
      { encoding: 'utf8' },
    );
    expect([r.status, r.stderr]).toEqual([1, expect.stringContaining('[ERR_WOULD_OVERWRITE]')]);
    expect(tree(root)).toEqual(before);
  });
});
