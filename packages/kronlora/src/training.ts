/**
 * Training from JavaScript: the options and events of `model.train()`, and `TrainingRun`, the
 * handle it returns (an async iterable of events plus a promise of the result).
 */
import type { RawTraining } from './binding.js';
import { KronLoraError, fromBackendError } from './errors.js';

/** A classification record. Labels are class indices, or names (mapped in sorted order and saved with the adapter). */
export interface ClassificationRecord {
  text: string;
  label: number | string;
}
/** A causal-LM record: plain text (all scored), prompt + completion (completion scored), or chat (assistant turns scored). */
export type CausalLmRecord = { text: string } | { prompt: string; completion: string } | { messages: { role: string; content: string }[] };
/** A multiple-choice record, scored by the summed log-likelihood of each choice. */
export interface MultipleChoiceRecord {
  question: string;
  choices: string[];
  answer: number;
}
export type TrainRecord = ClassificationRecord | CausalLmRecord | MultipleChoiceRecord;

/** A `.jsonl` path (one record per line; a `.json` array also works) or the records themselves. */
export type DataSource = string | TrainRecord[];

export type TrainTask = 'classification' | 'causal-lm' | 'multiple-choice';

export interface TrainOptions {
  data: DataSource;
  /** Default: `validationSplit` of `data` is held out instead. */
  validationData?: DataSource;
  /** Fraction of `data` held out for validation when `validationData` is not given (default 0.1; 0: none). */
  validationSplit?: number;
  /** Default: `classification` for a sequence-classification model, `causal-lm` for a decoder. */
  task?: TrainTask;
  /** Default 1. */
  epochs?: number;
  /** Stop after this many optimiser steps. */
  maxSteps?: number;
  /** Default 16. */
  batchSize?: number;
  /** Default max(batchSize, 16). */
  evalBatchSize?: number;
  /** Peak learning rate (default 1e-3). */
  learningRate?: number;
  /** Fraction of the steps spent warming up linearly (default 0.06). */
  warmupRatio?: number;
  /** Warmup steps (overrides warmupRatio). */
  warmupSteps?: number;
  /** Decay after warmup (default `linear`, to zero at the end). */
  schedule?: 'linear' | 'cosine' | 'constant';
  /** Decoupled AdamW weight decay (default 0.01). */
  weightDecay?: number;
  /** Clip the global gradient norm (default 1; null: no clipping). */
  maxGradNorm?: number | null;
  /** Micro-batches per optimiser step (default 1). */
  gradientAccumulation?: number;
  /**
   * Recompute each transformer block's forward during backward instead of keeping its
   * activations: less memory, about one more forward pass of time; same losses and gradients
   * (default false).
   */
  gradientCheckpointing?: boolean;
  /** Tokens per example at most (default 128). */
  maxLength?: number;
  /** Seeds shuffling, the validation split and dropout (default 0). */
  seed?: number;
  /** Evaluate every N optimiser steps (default: at each epoch's end). */
  evalEvery?: number;
  /** What early stopping and "best" watch (default `loss`). */
  metric?: 'loss' | 'accuracy' | 'perplexity';
  /** Stop after `patience` evaluations without an improvement of at least `minDelta`. */
  earlyStopping?: boolean | { patience?: number; minDelta?: number };
  /** Put the best evaluated weights back at the end (default: when there is validation data). */
  loadBestAtEnd?: boolean;
  /**
   * Checkpoints go to `outputDir/checkpoint-NNNNNN`, the final adapter to `outputDir/adapter`;
   * nothing else there is touched. A run whose checkpoint or adapter would replace something
   * kronlora did not write is refused with `ERR_WOULD_OVERWRITE` before its first step.
   */
  outputDir?: string;
  /** Checkpoint every N steps (default: at each evaluation and epoch end). */
  checkpointEvery?: number;
  /** Checkpoints kept (default 2; kronlora's own older ones are removed, nothing else). */
  keepCheckpoints?: number;
  /** A checkpoint directory, or an `outputDir` (its latest kronlora checkpoint): continue that run exactly. */
  resumeFrom?: string;
  /** A step event every N steps (default 1). */
  logEvery?: number;
  /** Aborting stops the run after the current step and writes a checkpoint (with `outputDir`). */
  signal?: AbortSignal;
}

export interface EvalMetrics {
  loss: number;
  /** Classification and multiple choice. */
  accuracy?: number;
  /** Causal LM: e^loss per scored token. */
  perplexity?: number;
  examples: number;
}

export interface TrainResult {
  reason: 'completed' | 'early-stopped' | 'max-steps' | 'cancelled';
  step: number;
  totalSteps: number;
  epoch: number;
  /** Mean loss of the last optimiser step. */
  trainLoss: number | null;
  /** Validation metrics of the weights the model holds now (the best ones when restored). */
  metrics: EvalMetrics | null;
  bestStep: number | null;
  /** Mean training loss of every optimiser step (resumed runs include the earlier steps). */
  losses: number[];
  /** The latest checkpoint (with `outputDir`): pass it as `resumeFrom` to continue. */
  checkpoint: string | null;
  /** Where the final adapter was saved (with `outputDir`). */
  adapterDir: string | null;
  seconds: number;
  examplesPerSecond: number;
}

export type TrainEvent =
  | {
      type: 'start';
      task: TrainTask;
      totalSteps: number;
      epochs: number;
      trainExamples: number;
      validationExamples: number;
      trainableParameters: number;
      /** The adapters trained: the active ones. */
      adapters: string[];
      resumedFromStep: number | null;
    }
  | {
      type: 'step';
      step: number;
      totalSteps: number;
      epoch: number;
      loss: number;
      learningRate: number;
      gradNorm: number;
      examplesPerSecond: number;
      tokensPerSecond: number;
      elapsedSeconds: number;
    }
  | { type: 'eval'; step: number; epoch: number; metrics: EvalMetrics; isBest: boolean }
  | { type: 'checkpoint'; step: number; path: string }
  | ({ type: 'done' } & TrainResult);

/**
 * A running training job. Iterate it for events (`for await (const e of run)`), await
 * `run.result` for the outcome, `run.cancel()` (or the `signal`) to stop after the current step.
 */
export class TrainingRun implements AsyncIterable<TrainEvent> {
  /** Resolves when training ends (also when cancelled: `reason: 'cancelled'`); rejects on error. */
  readonly result: Promise<TrainResult>;
  private readonly events: TrainEvent[] = [];
  private readonly waiters: (() => void)[] = [];
  private ended = false;
  private failure: unknown;
  private iterated = false;

  private cancelled = false;
  private raw?: RawTraining;

  /** @internal */
  constructor(started: Promise<RawTraining>, signal?: AbortSignal, onEnd: () => Promise<void> = async () => {}) {
    const onAbort = () => this.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    started.then(
      (raw) => {
        this.raw = raw;
        if (this.cancelled) raw.cancel();
      },
      () => {},
    );
    void this.pump(started);
    this.result = started
      .then((raw) => raw.finish())
      .then(async (json) => {
        await onEnd();
        return JSON.parse(json) as TrainResult;
      })
      .catch((error) => {
        throw fromBackendError(error);
      })
      .finally(() => signal?.removeEventListener('abort', onAbort));
    // Handled here so that a caller who only iterates never sees an unhandled rejection;
    // awaiting `result` still rejects.
    this.result.catch((error) => {
      this.failure = error;
      this.wake();
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  private async pump(started: Promise<RawTraining>): Promise<void> {
    try {
      const raw = await started;
      for (;;) {
        const json = await raw.next();
        if (json === null) break;
        this.events.push(JSON.parse(json) as TrainEvent);
        this.wake();
      }
    } catch (error) {
      this.failure ??= fromBackendError(error);
    }
    this.ended = true;
    this.wake();
  }

  /**
   * Stop after the current optimiser step (with `outputDir` a resumable checkpoint is written),
   * or, while the data is still being read and tokenised, before its next record.
   */
  cancel(): void {
    this.cancelled = true;
    this.raw?.cancel();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<TrainEvent> {
    if (this.iterated) throw new KronLoraError('ERR_INVALID_STATE', 'a training run can be iterated once');
    this.iterated = true;
    let i = 0;
    for (;;) {
      if (i < this.events.length) {
        yield this.events[i++];
        continue;
      }
      if (this.ended) {
        // The run failed: the error surfaces here too, once every event was seen.
        if (this.failure === undefined) await this.result.catch(() => {});
        if (this.failure !== undefined) throw this.failure;
        return;
      }
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }
}
