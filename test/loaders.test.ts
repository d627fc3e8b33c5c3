// Loaders refuse model and adapter files they cannot read correctly, on both backends, with
// ERR_INVALID_MODEL naming the file (by its path, on WASM too) and the field or tensor.
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KronLoraError } from 'kronlora';
import { backends, on } from './backends.js';
import { tinyBertDir, tinyLlamaGguf } from './tiny-models.js';

const bertDir = tinyBertDir(3);
const llamaFile = tinyLlamaGguf(4);
const texts = ['the movie was great!', 'a bad plot, not fun.'];

async function rejectsWith(promise: Promise<unknown>, code: string, parts: (string | RegExp)[]) {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, 'expected a rejection').toBeInstanceOf(KronLoraError);
  expect((error as KronLoraError).code).toBe(code);
  const message = (error as KronLoraError).message;
  expect(message).not.toContain('\n');
  for (const part of parts) {
    if (typeof part === 'string') expect(message).toContain(part);
    else expect(message).toMatch(part);
  }
}

/** A copy of the tiny BERT directory. */
function bertCopy(): string {
  const dir = join(mkdtempSync(join(tmpdir(), 'kronlora-loaders-')), 'model');
  cpSync(bertDir, dir, { recursive: true });
  return dir;
}

function editConfig(dir: string, edit: (config: Record<string, unknown>) => void) {
  const path = join(dir, 'config.json');
  const config = JSON.parse(readFileSync(path, 'utf8'));
  edit(config);
  writeFileSync(path, JSON.stringify(config));
}

/** Rewrite a safetensors file's JSON header; the data stays as it is. */
function editHeader(path: string, edit: (header: Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>) => void) {
  const bytes = readFileSync(path);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
  edit(header);
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([size, Buffer.from(json), bytes.subarray(8 + n)]));
}

/** A copy of the tiny GGUF with tensor `name`'s directory entry edited. */
function ggufWith(name: string, edit: (bytes: Buffer, at: { dims: number; type: number; offset: number }) => void): string {
  const bytes = Buffer.from(readFileSync(llamaFile));
  const end = bytes.indexOf(Buffer.from(name)) + name.length;
  const nDims = bytes.readUInt32LE(end);
  const dims = end + 4;
  const type = dims + 8 * nDims;
  edit(bytes, { dims, type, offset: type + 4 });
  const file = join(mkdtempSync(join(tmpdir(), 'kronlora-loaders-')), 'edited.gguf');
  writeFileSync(file, bytes);
  return file;
}

describe.each(backends)('loaders on %s refuse files they cannot read', (name) => {
  const api = on(name);

  it('still load the valid tiny models', async () => {
    const model = await api.loadModel(bertDir, { task: 'embedding' });
    const vectors = await model.embed(texts);
    expect(vectors.every((v) => v.every(Number.isFinite))).toBe(true);
    const llama = await api.loadModel(llamaFile);
    expect((await llama.logits(['a the']))[0].every(Number.isFinite)).toBe(true);
  });

  it('a safetensors tensor of a non-float dtype, named with the file path', async () => {
    const dir = bertCopy();
    const tensor = 'encoder.layer.0.attention.self.key.weight';
    editHeader(join(dir, 'model.safetensors'), (h) => {
      h[tensor].dtype = 'I32';
    });
    await rejectsWith(api.loadModel(dir), 'ERR_INVALID_MODEL', [join(dir, 'model.safetensors'), tensor, 'I32']);
  });

  it('config values out of range name config.json and the field', async () => {
    for (const [field, value] of [
      ['layer_norm_eps', -1],
      ['hidden_size', 0],
      ['vocab_size', 1e12],
    ] as const) {
      const dir = bertCopy();
      editConfig(dir, (c) => {
        c[field] = value;
      });
      await rejectsWith(api.loadModel(dir), 'ERR_INVALID_MODEL', [join(dir, 'config.json'), `\`${field}\``]);
    }
  });

  it('a config with fewer layers than the checkpoint', async () => {
    const dir = bertCopy();
    editConfig(dir, (c) => {
      c.num_hidden_layers = 1;
    });
    await rejectsWith(api.loadModel(dir), 'ERR_INVALID_MODEL', [
      join(dir, 'model.safetensors'),
      'encoder.layer.1.',
      'num_hidden_layers` = 1',
    ]);
  });

  it('GGUF offsets, types and dims are checked; huge dims are reported as they are', async () => {
    const offByOne = ggufWith('blk.0.ffn_up.weight', (b, at) => {
      b[at.offset] += 1;
    });
    await rejectsWith(api.loadModel(offByOne), 'ERR_INVALID_MODEL', [offByOne, 'blk.0.ffn_up.weight', 'general.alignment = 32']);
    const f16 = ggufWith('blk.0.attn_q.weight', (b, at) => {
      b.writeUInt32LE(1, at.type);
    });
    await rejectsWith(api.loadModel(f16), 'ERR_INVALID_MODEL', [f16, 'blk.0.attn_q.weight', /offset/]);
    const huge = ggufWith('output_norm.weight', (b, at) => {
      b.writeBigUInt64LE(1n << 40n, at.dims);
    });
    await rejectsWith(api.loadModel(huge), 'ERR_INVALID_MODEL', [huge, 'output_norm.weight', '[1099511627776]']);
  });

  it('adapter configs out of range or disagreeing with the tensors', async () => {
    const model = await api.loadModel(bertDir, { task: 'sequence-classification', numLabels: 2 });
    await model.addAdapter('default', { type: 'lora', rank: 4, alpha: 8, targetModules: ['query', 'value'] });
    const saved = join(mkdtempSync(join(tmpdir(), 'kronlora-loaders-')), 'adapter');
    await model.saveAdapter(saved);
    const original = readFileSync(join(saved, 'adapter_config.json'), 'utf8');
    const tryLoad = async (edit: (c: Record<string, unknown>) => void) => {
      const c = JSON.parse(original);
      edit(c);
      writeFileSync(join(saved, 'adapter_config.json'), JSON.stringify(c));
      const fresh = await api.loadModel(bertDir, { task: 'sequence-classification', numLabels: 2 });
      return fresh.loadAdapter(saved);
    };
    await rejectsWith(
      tryLoad((c) => {
        c.lora_alpha = 1e30;
      }),
      'ERR_INVALID_MODEL',
      [join(saved, 'adapter_config.json'), '`lora_alpha`', '1e6'],
    );
    await rejectsWith(
      tryLoad((c) => {
        c.r = 2;
      }),
      'ERR_INVALID_MODEL',
      ['`r` = 2', 'rank 4'],
    );
    await rejectsWith(
      tryLoad((c) => {
        c.target_modules = ['query'];
      }),
      'ERR_INVALID_MODEL',
      ['target_modules', 'value'],
    );
    expect(await tryLoad(() => {})).toEqual({ modules: 4 });
  });
});
