/**
 * The core's storage in a browser: files in memory, in the Web Worker that owns the models.
 * Adapters and checkpoints are written here, data files and adapters to load are put here
 * (`storeFiles`), and the page reads results back (`readFiles`, `adapterBlob`). The same rules
 * as on disk hold (exclusive create, rename over, remove only empty directories), because the
 * core's safe-writing logic (io/owned_dir.rs) relies on them.
 */
import type { WasmStorage } from '../wasm-models.js';

/** `/a//b/./c/` → `/a/b/c`; relative paths are taken from the root. */
function normalize(path: string): string {
  const parts: string[] = [];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') parts.pop();
    else parts.push(part);
  }
  return `/${parts.join('/')}`;
}

function parent(path: string): string {
  return path.slice(0, path.lastIndexOf('/')) || '/';
}

function fsError(code: string, path: string, what: string): Error {
  return Object.assign(new Error(`${code}: ${what}, '${path}'`), { code });
}

export class MemoryStorage implements WasmStorage {
  private readonly files = new Map<string, Uint8Array>();
  private readonly dirs = new Set<string>(['/']);

  read(path: string): Uint8Array {
    const bytes = this.files.get(normalize(path));
    if (!bytes) throw fsError('ENOENT', path, 'no such file');
    return bytes;
  }

  exists(path: string): boolean {
    return this.kind(path) !== 'missing';
  }

  kind(path: string): 'missing' | 'file' | 'dir' {
    const p = normalize(path);
    return this.files.has(p) ? 'file' : this.dirs.has(p) ? 'dir' : 'missing';
  }

  list(dir: string): string[] {
    const d = normalize(dir);
    if (!this.dirs.has(d)) throw fsError('ENOENT', dir, 'no such directory');
    const prefix = d === '/' ? '/' : `${d}/`;
    const names = new Set<string>();
    for (const p of [...this.files.keys(), ...this.dirs]) {
      if (p.startsWith(prefix) && p.length > prefix.length) names.add(p.slice(prefix.length).split('/')[0]);
    }
    return [...names].sort();
  }

  createDirAll(dir: string): void {
    const d = normalize(dir);
    if (this.files.has(d)) throw fsError('EEXIST', dir, 'a file is in the way');
    if (d !== '/') this.createDirAll(parent(d));
    this.dirs.add(d);
  }

  createDir(dir: string): void {
    const d = normalize(dir);
    if (this.exists(d)) throw fsError('EEXIST', dir, 'already exists');
    if (!this.dirs.has(parent(d))) throw fsError('ENOENT', dir, 'no parent directory');
    this.dirs.add(d);
  }

  writeNewFile(path: string, bytes: Uint8Array): void {
    const p = normalize(path);
    if (this.exists(p)) throw fsError('EEXIST', path, 'already exists');
    if (!this.dirs.has(parent(p))) throw fsError('ENOENT', path, 'no parent directory');
    // Kept as given: the core's storage calls pass a fresh copy out of WASM memory
    // (js_sys's Uint8Array::from), and putFiles' bytes were transferred to this worker.
    this.files.set(p, bytes);
  }

  /** Like POSIX rename: a file replaces a file, a directory replaces an empty directory. */
  rename(from: string, to: string): void {
    const f = normalize(from);
    const t = normalize(to);
    if (!this.dirs.has(parent(t))) throw fsError('ENOENT', to, 'no parent directory');
    const bytes = this.files.get(f);
    if (bytes) {
      if (this.dirs.has(t)) throw fsError('EISDIR', to, 'is a directory');
      this.files.delete(f);
      this.files.set(t, bytes);
      return;
    }
    if (!this.dirs.has(f)) throw fsError('ENOENT', from, 'no such file or directory');
    if (this.files.has(t)) throw fsError('ENOTDIR', to, 'is a file');
    if (this.dirs.has(t) && this.list(t).length) throw fsError('ENOTEMPTY', to, 'directory not empty');
    if (t.startsWith(`${f}/`)) throw fsError('EINVAL', to, 'inside the directory it would move');
    const move = (p: string) => t + p.slice(f.length);
    for (const p of [...this.files.keys()]) {
      if (p.startsWith(`${f}/`)) {
        this.files.set(move(p), this.files.get(p)!);
        this.files.delete(p);
      }
    }
    for (const p of [...this.dirs]) {
      if (p === f || p.startsWith(`${f}/`)) {
        this.dirs.delete(p);
        this.dirs.add(move(p));
      }
    }
  }

  removeFile(path: string): void {
    if (!this.files.delete(normalize(path))) throw fsError('ENOENT', path, 'no such file');
  }

  removeEmptyDir(dir: string): void {
    const d = normalize(dir);
    if (!this.dirs.has(d)) throw fsError('ENOENT', dir, 'no such directory');
    if (this.list(d).length) throw fsError('ENOTEMPTY', dir, 'directory not empty');
    if (d !== '/') this.dirs.delete(d);
  }
}
