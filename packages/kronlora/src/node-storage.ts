/**
 * The core's storage on Node's fs for the WASM backend (WASM has no file system): data files,
 * checkpoints, adapters, and the model config the CLI's setup reads. Only primitives, as the
 * native FsStorage has; what may be written, replaced or removed is decided in the core
 * (io/owned_dir.rs) for both backends.
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  unlinkSync,
  writeSync,
} from 'node:fs';

export const nodeStorage = {
  read: (path: string): Uint8Array => readFileSync(path),
  exists: (path: string): boolean => existsSync(path),
  kind(path: string): 'missing' | 'file' | 'dir' | 'symlink' | 'other' {
    const stat = lstatSync(path, { throwIfNoEntry: false });
    if (!stat) return 'missing';
    return stat.isSymbolicLink() ? 'symlink' : stat.isDirectory() ? 'dir' : stat.isFile() ? 'file' : 'other';
  },
  list: (dir: string): string[] => readdirSync(dir),
  createDirAll: (dir: string): void => void mkdirSync(dir, { recursive: true }),
  createDir: (dir: string): void => mkdirSync(dir),
  writeNewFile(path: string, bytes: Uint8Array): void {
    const fd = openSync(path, 'wx');
    try {
      for (let written = 0; written < bytes.length; ) written += writeSync(fd, bytes, written);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  },
  rename: (from: string, to: string): void => renameSync(from, to),
  removeFile: (path: string): void => unlinkSync(path),
  removeEmptyDir: (dir: string): void => rmdirSync(dir),
};
