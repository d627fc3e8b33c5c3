// Untrusted model files and data, on both backends: hostile chat templates end in
// ERR_INVALID_MODEL (within a hang limit, and the backend stays usable), cancellation reaches
// data preparation, option extremes and over-long records are refused with the limit, and data
// files get precise messages.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KronLoraError } from 'kronlora';
import { backends, on } from './backends.js';
import { tinyBertDir, tinyLlamaGguf } from './tiny-models.js';

/** A hang guard for one case, not a speed requirement. */
const HANG_LIMIT_MS = 20_000;
const LORA = { type: 'lora', rank: 4, alpha: 8, targetModules: 'all-linear' } as const;
const TEMPLATE = '{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}';
const bertDir = tinyBertDir(5);
const chat = (n: number) =>
  Array.from({ length: n }, () => ({
    messages: [
      { role: 'user', content: 'a the' },
      { role: 'assistant', content: 'the b' },
    ],
  }));
const tmp = () => mkdtempSync(join(tmpdir(), 'kronlora-untrusted-'));

async function rejection(promise: Promise<unknown>): Promise<KronLoraError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, 'expected a rejection').toBeInstanceOf(KronLoraError);
  return error as KronLoraError;
}

describe.each(backends)('untrusted input on %s', (name) => {
  const api = on(name);

  it.each([
    [
      'nested range loops',
      '{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}',
      /runs more than 2000000 instructions/,
    ],
    ['huge output in a loop', "{% for i in range(10000) %}{{ 'y' * 100000 }}{% endfor %}", /writes more than 16 MiB for one conversation/],
    [
      'huge output captured in a variable',
      "{% set s %}{% for i in range(10000) %}{{ 'y' * 100000 }}{% endfor %}{% endset %}{{ s | length }}",
      /writes more than 16 MiB/,
    ],
    ['unbounded recursion', '{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}', /nests calls deeper than/],
  ])(
    'a chat template with %s ends in ERR_INVALID_MODEL and the backend stays usable',
    async (_, template, limit) => {
      const file = tinyLlamaGguf(2, template);
      const model = await api.loadModel(file);
      await model.addAdapter('default', LORA);
      const e = await rejection(model.train({ data: chat(2), epochs: 1 }).result);
      expect(e.code).toBe('ERR_INVALID_MODEL');
      expect(e.message).toMatch(/^training data record 0: the chat template \(.*tiny-llama\.gguf: tokenizer\.chat_template\)/);
      expect(e.message).toMatch(limit);
      expect(e.message).not.toMatch(/\n/);
      // The same model (and backend) still trains on data that does not need the template.
      const result = await model.train({ data: [{ prompt: 'a', completion: ' the b' }], epochs: 1 }).result;
      expect(result.reason).toBe('completed');
    },
    HANG_LIMIT_MS,
  );

  it(
    'a real template still renders, and a conversation it refuses is a data error',
    async () => {
      const model = await api.loadModel(tinyLlamaGguf(2, TEMPLATE));
      await model.addAdapter('default', LORA);
      expect((await model.train({ data: chat(2), epochs: 1 }).result).reason).toBe('completed');
      const raising =
        "{% for m in messages %}{% if loop.index0 % 2 == 1 and m.role == 'user' %}{{ raise_exception('roles must alternate') }}{% endif %}{{ m.content }}{% endfor %}";
      const strict = await api.loadModel(tinyLlamaGguf(2, raising));
      await strict.addAdapter('default', LORA);
      const e = await rejection(
        strict.train({
          data: [
            {
              messages: [
                { role: 'assistant', content: 'a' },
                { role: 'user', content: 'b' },
              ],
            },
          ],
        }).result,
      );
      expect([e.code, e.message]).toEqual(['ERR_INVALID_DATA', expect.stringMatching(/refuses this conversation: roles must alternate$/)]);
    },
    HANG_LIMIT_MS,
  );

  it(
    'cancellation reaches data preparation: no step is trained',
    async () => {
      const model = await api.loadModel(tinyLlamaGguf(2, TEMPLATE));
      await model.addAdapter('default', LORA);
      const controller = new AbortController();
      const run = model.train({ data: chat(3000), epochs: 1, batchSize: 2, signal: controller.signal });
      controller.abort();
      // `start` is sent once the data is prepared: without the check between records, all 3000
      // would be encoded first and the run would then stop at step 0 after a `start`.
      const events: string[] = [];
      for await (const event of run) events.push(event.type);
      const result = await run.result;
      expect([result.reason, result.step]).toEqual(['cancelled', 0]);
      expect(events.filter((type) => type === 'start' || type === 'step')).toEqual([]);
    },
    HANG_LIMIT_MS,
  );

  it('options that would allocate gigabytes are refused with the limit', async () => {
    let e = await rejection(api.loadModel(bertDir, { task: 'sequence-classification', numLabels: 16777216 }));
    expect([e.code, e.message]).toEqual([
      'ERR_INVALID_OPTION',
      expect.stringMatching(/`numLabels` = 16777216 is larger than the supported maximum of 65536/),
    ]);
    const llama = await api.loadModel(tinyLlamaGguf(2));
    e = await rejection(llama.addAdapter('big', { type: 'lora', rank: 65536, alpha: 8, targetModules: 'all-linear' }));
    expect([e.code, e.message]).toEqual([
      'ERR_INVALID_OPTION',
      expect.stringMatching(/`rank` = 65536 is too large for layer `model\.layers\.0\.self_attn\.q_proj`.*use rank ≤ 32/),
    ]);
    e = await rejection(
      llama.addAdapter('big', { type: 'kron-lora', rank: 17, alpha: 8, kronIn: 2, kronOut: 4, targetModules: ['k_proj'] }),
    );
    expect(e.message).toMatch(
      /layer `model\.layers\.0\.self_attn\.k_proj`: an update of this 16×32 layer has rank at most 16; use rank ≤ 16/,
    );
    expect(
      (await llama.addAdapter('fits', { type: 'kron-lora', rank: 16, alpha: 8, kronIn: 2, kronOut: 4, targetModules: ['k_proj'] })).modules,
    ).toBe(2);
  });

  describe('data files', () => {
    const classifier = async () => {
      const model = await api.loadModel(bertDir, { task: 'sequence-classification', numLabels: 2, seed: 1 });
      await model.addAdapter('default', LORA);
      return model;
    };
    const file = (text: string) => {
      const path = join(tmp(), 'train.jsonl');
      writeFileSync(path, text);
      return path;
    };

    it('a line longer than 1 MiB is refused with its file and line', async () => {
      const path = file(`{"text":"good","label":0}\n{"text":"${'good '.repeat(300_000)}","label":1}\n`);
      const e = await rejection((await classifier()).train({ data: path, epochs: 1 }).result);
      expect(e.code).toBe('ERR_INVALID_DATA');
      expect(e.message).toMatch(
        new RegExp(
          `^${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2: the record is 1500021 bytes long; the limit is 1048576 bytes \\(1 MiB\\) per record`,
        ),
      );
    });

    it('a byte-order mark is accepted; NaN, Infinity and duplicate keys are named with their line', async () => {
      const model = await classifier();
      const ok = await model.train({ data: file('\uFEFF{"text":"good","label":0}\n{"text":"bad","label":1}\n'), epochs: 1 }).result;
      expect(ok.reason).toBe('completed');
      for (const bad of ['NaN', 'Infinity']) {
        const path = file(`{"text":"good","label":0}\n{"text":"bad","label":${bad}}\n`);
        const e = await rejection(model.train({ data: path, epochs: 1 }).result);
        expect([e.code, e.message]).toEqual([
          'ERR_INVALID_DATA',
          `${path}:2: invalid JSON: \`${bad}\` at line 1 column 23 is not a JSON value (JSON numbers are finite); labels must be integers or strings`,
        ]);
      }
      const path = file('{"text":"good","label":0,"label":1}\n');
      const e = await rejection(model.train({ data: path, epochs: 1 }).result);
      expect([e.code, e.message]).toEqual([
        'ERR_INVALID_DATA',
        expect.stringMatching(/:1: invalid JSON: duplicate key `label` at line 1 column \d+: an object may hold each key once/),
      ]);
      expect(e.message.startsWith(`${path}:1:`)).toBe(true);
    });

    it('an out-of-range label names its line; integer labels on a string-labelled model list its labels', async () => {
      const model = await classifier();
      const path = file('{"text":"good","label":0}\n\n{"text":"bad","label":5}\n');
      let e = await rejection(model.train({ data: path, epochs: 1 }).result);
      expect([e.code, e.message]).toEqual(['ERR_INVALID_DATA', `${path}:3: label 5 is out of range for numLabels = 2; labels are 0..1`]);
      await model.train({
        data: [
          { text: 'good', label: 'pos' },
          { text: 'bad', label: 'neg' },
        ],
        epochs: 1,
        validationSplit: 0,
      }).result;
      e = await rejection(model.evaluate([{ text: 'good', label: 1 }]));
      expect([e.code, e.message]).toEqual([
        'ERR_INVALID_DATA',
        'evaluation data record 0: label 1 is an integer, but this model was trained with string labels: neg, pos; use one of them',
      ]);
    });

    it('a lone surrogate escape (valid JSON) is read as U+FFFD, in files and in records', async () => {
      const model = await classifier();
      const path = file('{"text":"good \\ud800","label":0}\n{"text":"bad","label":1}\n');
      expect((await model.train({ data: path, epochs: 1 }).result).reason).toBe('completed');
      expect(
        (
          await model.train({
            data: [
              { text: 'good \ud800', label: 0 },
              { text: 'bad', label: 1 },
            ],
            epochs: 1,
          }).result
        ).reason,
      ).toBe('completed');
    });
  });
});
