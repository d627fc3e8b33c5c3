/**
 * Whether this CPU runs the native addon. It is compiled for x86-64-v3 (.cargo/config.toml):
 * on an older x86-64 CPU its first AVX2 instruction would kill the process with SIGILL, so the
 * loader asks first and uses the WASM backend instead.
 */
import { readFileSync } from 'node:fs';

/** x86-64-v3's features as Linux names them in /proc/cpuinfo (`abm` is LZCNT). */
const X86_64_V3 = ['avx', 'avx2', 'fma', 'f16c', 'bmi1', 'bmi2', 'movbe', 'abm', 'xsave'];

/**
 * The x86-64-v3 features this CPU lacks, from `cpuinfo` (Linux's /proc/cpuinfo by default).
 * Empty off x86-64 Linux, or where the flags cannot be read: nothing to check there.
 */
export function missingCpuFeatures(cpuinfo?: string): string[] {
  if (cpuinfo === undefined) {
    if (process.platform !== 'linux' || process.arch !== 'x64') return [];
    try {
      cpuinfo = readFileSync('/proc/cpuinfo', 'latin1');
    } catch {
      return [];
    }
  }
  const line = /^flags\s*:(.*)$/m.exec(cpuinfo);
  if (!line) return [];
  const flags = new Set(line[1].trim().split(/\s+/));
  return X86_64_V3.filter((f) => !flags.has(f));
}
