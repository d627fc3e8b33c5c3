/**
 * How the CLI talks: human lines on stdout (or one JSON object with `--json`), progress and
 * notices on stderr, errors as one line `kronlora: error: …` (the stack only with `--debug`).
 */
export interface Io {
  out(line: string): void;
  err(line: string): void;
  readonly stderrIsTty: boolean;
}

export const processIo: Io = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  get stderrIsTty() {
    return Boolean(process.stderr.isTTY);
  },
};

/** `1234567` → `1,234,567`. */
export const count = (n: number): string => n.toLocaleString('en-US');

/** Seconds as `1h02m`, `3m05s` or `12s`. */
export function duration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

/** Metrics as `loss 0.4123 · accuracy 0.861`. */
export function metricsLine(m: { loss: number; accuracy?: number; perplexity?: number }): string {
  const parts = [`loss ${m.loss.toFixed(4)}`];
  if (m.accuracy !== undefined) parts.push(`accuracy ${m.accuracy.toFixed(3)}`);
  if (m.perplexity !== undefined) parts.push(`perplexity ${m.perplexity.toFixed(2)}`);
  return parts.join(' · ');
}
