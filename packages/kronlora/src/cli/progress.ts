/**
 * Training progress: a live bar (cli-progress) with loss, rate and time remaining when stderr
 * is a terminal; otherwise plain lines every ~10 % of the run or 30 s, readable in CI logs.
 */
import cliProgress from 'cli-progress';
import type { TrainEvent } from '../training.js';
import { type Io, duration, metricsLine } from './output.js';

export interface Progress {
  event(e: TrainEvent): void;
  /** Print a line without breaking the bar. */
  note(line: string): void;
  stop(): void;
}

export function trainingProgress(io: Io, enabled: boolean): Progress {
  if (!enabled) return { event: () => {}, note: () => {}, stop: () => {} };
  if (io.stderrIsTty) return barProgress(io);
  return lineProgress(io);
}

function barProgress(io: Io): Progress {
  const bar = new cliProgress.SingleBar(
    {
      format: '  {bar} {percentage}% | step {value}/{total} | loss {loss} | {rate} ex/s | ETA {eta_formatted}',
      hideCursor: true,
      etaBuffer: 20,
      stream: process.stderr,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    event(e) {
      if (e.type === 'start') {
        bar.start(e.totalSteps, e.resumedFromStep ?? 0, { loss: '-', rate: '-' });
        started = true;
      } else if (e.type === 'step' && started) {
        bar.update(e.step, { loss: e.loss.toFixed(4), rate: e.examplesPerSecond.toFixed(1) });
      } else if (e.type === 'eval' && started) {
        this.note(`  eval at step ${e.step}: ${metricsLine(e.metrics)}${e.isBest ? ' (best)' : ''}`);
      }
    },
    note(line) {
      if (started) {
        // Clear the bar's line, print, and let the next update redraw it.
        process.stderr.write('\r\x1b[2K');
        io.err(line);
        bar.render();
      } else io.err(line);
    },
    stop() {
      if (started) bar.stop();
      started = false;
    },
  };
}

function lineProgress(io: Io): Progress {
  let total = 0;
  let first = 0;
  let lastPrinted = 0;
  let lastTime = 0;
  let startTime = 0;
  return {
    event(e) {
      if (e.type === 'start') {
        total = e.totalSteps;
        first = e.resumedFromStep ?? 0;
        startTime = lastTime = performance.now();
        io.err(`  training: ${total} steps${first ? `, resuming after step ${first}` : ''}`);
      } else if (e.type === 'step') {
        const now = performance.now();
        const every = Math.max(1, Math.ceil(total / 10));
        if (e.step === total || e.step - lastPrinted >= every || now - lastTime > 30_000) {
          const perStep = (now - startTime) / 1000 / Math.max(1, e.step - first);
          io.err(
            `  step ${e.step}/${total} · loss ${e.loss.toFixed(4)} · lr ${e.learningRate.toExponential(2)} · ` +
              `${e.examplesPerSecond.toFixed(1)} ex/s · ETA ${duration(perStep * (total - e.step))}`,
          );
          lastPrinted = e.step;
          lastTime = now;
        }
      } else if (e.type === 'eval') {
        io.err(`  eval at step ${e.step}: ${metricsLine(e.metrics)}${e.isBest ? ' (best)' : ''}`);
      }
    },
    note: (line) => io.err(line),
    stop: () => {},
  };
}
