//! The training loop for every task: seeded length-bucketed batches, AdamW with a warmup
//! schedule, gradient accumulation and clipping, adapter dropout, periodic evaluation with
//! early stopping and the best weights kept, atomic checkpoints, exact resume, cancellation,
//! and a stop on any non-finite loss or gradient (parameters and checkpoints stay as they were).
//!
//! `train` checks the run, reads its data, and hands the rest to a `Trainer`: one value that
//! holds what the loop needs (model, options, data, optimiser, position), with one method per
//! part of a step.

use web_time::Instant;

use candle_core::{Tensor, Var};

use super::checkpoint::{
    check_output_dir, checkpoint_dir, find_checkpoint, read_checkpoint, rotate_checkpoints, save_checkpoint, BestSoFar,
    Checkpoint, ResumePlan, TrainerState,
};
use super::events::{StopReason, TrainEvent, TrainObserver, TrainResult};
use super::options::{DataSpec, EvalOptions, Metric, TrainOptions, TrainTask};
use super::task_data::{check_task, default_task, encode, read_records, EvalMetrics, TaskData};
use super::{clip_grads, grad_norm, AdamW, AdamWConfig, LrSchedule};
use crate::data::{bucketed_batches, train_validation_split};
use crate::error::{Error, Result};
use crate::io::{join, Storage};
use crate::models::checkpoint::{add_gradient, take_parameter_grads, with_checkpointing};
use crate::pretrained::PretrainedModel;
use crate::reuse_freed_memory::ReuseFreedMemory;
use crate::TensorData;

/// Trainable tensors with stable names: the active adapters' parameters in model order, then
/// the head. An inactive adapter is neither used nor trained.
pub fn trainable_named(model: &PretrainedModel) -> Vec<(String, Var)> {
    let active: Vec<String> = model.active_adapters().into_iter().map(|a| a.name).collect();
    let mut out: Vec<(String, Var)> = model
        .adapters()
        .into_iter()
        .filter(|(_, name, _)| active.contains(name))
        .flat_map(|(path, name, a)| {
            a.parameters().into_iter().map(move |(p, v)| (format!("{name}/{path}/{p}"), v.clone())).collect::<Vec<_>>()
        })
        .collect();
    if let Some(head) = &model.head {
        out.extend(head.parameters().into_iter().map(|(n, v)| (format!("head/{n}"), v.clone())));
    }
    out
}

/// Train the model's adapters (and head) as `options` say, reading data and writing
/// checkpoints through `storage`; events go to `observer`.
pub fn train(
    model: &mut PretrainedModel,
    options: &TrainOptions,
    storage: &dyn Storage,
    observer: &mut dyn TrainObserver,
) -> Result<TrainResult> {
    let (task, vars) = check_run(model, options)?;
    let _reuse = ReuseFreedMemory::begin();
    let prepare_started = Instant::now();
    let Some(data) = prepare_data(model, options, task, storage, observer)? else {
        // Cancelled while the data was being read: nothing was trained or written.
        let result = cancelled_while_preparing(prepare_started.elapsed().as_secs_f64());
        observer.event(&TrainEvent::Done(result.clone()));
        return Ok(result);
    };
    let mut trainer = Trainer::new(model, options, task, vars, data, storage, observer)?;
    trainer.resume()?;
    trainer.check_output_dir()?;
    trainer.run()
}

/// Refuse, before any data is read, a run that cannot train: a task the model does not do, no
/// trainable tensors, a metric the task does not compute. Returns the task and the tensors.
fn check_run(model: &PretrainedModel, o: &TrainOptions) -> Result<(TrainTask, Vec<(String, Var)>)> {
    let task = o.task.unwrap_or_else(|| default_task(model));
    check_task(model, task)?;
    if model.is_merged() {
        return Err(Error::InvalidState(
            "the active adapters are merged into the base weights; call unmergeAdapters() before training".into(),
        ));
    }
    if model.active_adapters().is_empty() {
        return Err(Error::InvalidState(if model.adapter_infos().is_empty() {
            "the model has no adapter to train: add one or load one first".into()
        } else {
            "no adapter is active: setActiveAdapters([...]) the one(s) to train".into()
        }));
    }
    let vars = trainable_named(model);
    let computed = match o.metric {
        Metric::Loss => true,
        Metric::Accuracy => task != TrainTask::CausalLm,
        Metric::Perplexity => task == TrainTask::CausalLm,
    };
    if !computed {
        return Err(Error::InvalidOption(format!(
            "metric \"{}\" is not computed for task \"{}\"; use \"loss\"",
            o.metric.name(),
            task.name()
        )));
    }
    Ok((task, vars))
}

/// The tokenised data of a run: what it trains on and what it evaluates on.
struct RunData {
    train: TaskData,
    validation: Option<TaskData>,
}

/// Read, tokenise and split the data of a run; `None` when the observer asked to stop meanwhile.
/// Training data decides the label names of a classification model (`model.labels`).
fn prepare_data(
    model: &mut PretrainedModel,
    o: &TrainOptions,
    task: TrainTask,
    storage: &dyn Storage,
    observer: &mut dyn TrainObserver,
) -> Result<Option<RunData>> {
    let records = read_records(&o.data, task, storage, "training data")?;
    let (train_records, validation_records) = match &o.validation_data {
        Some(spec) => (records, Some(read_records(spec, task, storage, "validation data")?)),
        None if o.validation_split > 0.0 && records.len() >= 2 => {
            let (t, v) = train_validation_split(records, o.validation_split, o.seed)?;
            (t, Some(v))
        }
        None => (records, None),
    };
    let mut labels = model.labels.clone();
    let mut should_stop = || observer.should_stop();
    let Some(train) =
        encode(model, task, &train_records, o.max_length, &mut labels, true, &o.data.name("data"), &mut should_stop)?
    else {
        return Ok(None);
    };
    let validation = match validation_records {
        Some(r) => {
            let source = o.validation_data.as_ref().map_or("validation split".into(), |s| s.name("validationData"));
            let Some(v) = encode(model, task, &r, o.max_length, &mut labels, false, &source, &mut should_stop)? else {
                return Ok(None);
            };
            Some(v)
        }
        None => None,
    };
    // Only now: a run cancelled while reading leaves the model as it was.
    model.labels = labels;
    Ok(Some(RunData { train, validation }))
}

/// The result of a run cancelled before its first step, while its data was read.
fn cancelled_while_preparing(seconds: f64) -> TrainResult {
    TrainResult {
        reason: StopReason::Cancelled,
        step: 0,
        total_steps: 0,
        epoch: 0,
        train_loss: None,
        metrics: None,
        best_step: None,
        losses: Vec::new(),
        checkpoint: None,
        adapter_dir: None,
        seconds,
        examples_per_second: 0.0,
    }
}

/// splitmix64: a well-mixed seed per (run seed, epoch, micro-batch) for dropout masks.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn snapshot(vars: &[(String, Var)]) -> Result<Vec<TensorData>> {
    vars.iter().map(|(_, v)| TensorData::from_tensor(v.as_tensor())).collect()
}

/// Set each tensor to its saved value, on the device the tensor lives on.
fn restore(vars: &[(String, Var)], values: &[TensorData]) -> Result<()> {
    for ((_, v), t) in vars.iter().zip(values) {
        v.set(&t.to_tensor(v.device())?)?;
    }
    Ok(())
}

/// Add a micro-batch's gradients to the running sums (`vars[i]`'s into `sums[i]`); tensors the
/// micro-batch did not reach keep their sum.
fn accumulate(
    sums: &mut [Option<Tensor>],
    vars: &[(String, Var)],
    grads: &candle_core::backprop::GradStore,
) -> Result<()> {
    for (sum, (_, v)) in sums.iter_mut().zip(vars) {
        if let Some(g) = grads.get(v.as_tensor()) {
            add_gradient(sum, g)?;
        }
    }
    Ok(())
}

/// What one optimiser step reports.
struct StepStats {
    /// Mean loss over the step's micro-batches.
    loss: f64,
    /// The gradient norm before clipping.
    grad_norm: f64,
    learning_rate: f64,
}

/// Examples and tokens seen since the last step event, for its throughput figures.
struct Window {
    examples: usize,
    tokens: usize,
    started: Instant,
}

impl Window {
    fn new() -> Self {
        Window { examples: 0, tokens: 0, started: Instant::now() }
    }
}

/// One training run, from its prepared data to its result.
struct Trainer<'a> {
    /// Shared from here on: training changes the adapters' tensors (`Var`s), not the model.
    model: &'a PretrainedModel,
    options: &'a TrainOptions,
    storage: &'a dyn Storage,
    observer: &'a mut dyn TrainObserver,
    task: TrainTask,
    data: RunData,
    /// The trainable tensors with their names, in the order of the optimiser and of checkpoints.
    vars: Vec<(String, Var)>,
    optimizer: AdamW,
    schedule: LrSchedule,
    /// Sequence lengths of the training data, for length-bucketed batches.
    lengths: Vec<usize>,
    micro_batches_per_epoch: usize,
    steps_per_epoch: u64,
    /// Optimiser steps of the whole run (`maxSteps` included).
    total_steps: u64,
    /// Position, losses and best evaluation so far: what a checkpoint saves beside the tensors.
    state: TrainerState,
    /// The tensors of the best evaluation so far.
    best_parameters: Option<Vec<TensorData>>,
    resumed_from: Option<u64>,
    /// The latest checkpoint written, named in errors and in the result.
    last_checkpoint: Option<String>,
    /// The latest evaluation and the step it came after.
    last_metrics: Option<(u64, EvalMetrics)>,
    window: Window,
    /// Examples trained on in this run (resumed steps not included).
    run_examples: usize,
    started: Instant,
}

impl<'a> Trainer<'a> {
    /// A run at its start: no step taken, nothing evaluated or written.
    fn new(
        model: &'a PretrainedModel,
        options: &'a TrainOptions,
        task: TrainTask,
        vars: Vec<(String, Var)>,
        data: RunData,
        storage: &'a dyn Storage,
        observer: &'a mut dyn TrainObserver,
    ) -> Result<Self> {
        let o = options;
        if data.validation.is_none() && (o.early_stopping.is_some() || o.eval_every.is_some()) {
            return Err(Error::InvalidOption(
                "earlyStopping and evalEvery need validation data: give validationData, or a validationSplit above 0 with at least 2 records".into(),
            ));
        }
        let started = Instant::now();
        let micro_batches_per_epoch = data.train.len().div_ceil(o.batch_size);
        let steps_per_epoch = micro_batches_per_epoch.div_ceil(o.gradient_accumulation) as u64;
        let total_steps = (o.epochs as u64 * steps_per_epoch).min(o.max_steps.unwrap_or(u64::MAX));
        let schedule = LrSchedule {
            kind: o.schedule,
            base_lr: o.learning_rate,
            warmup_steps: o.warmup_steps.unwrap_or((o.warmup_ratio * total_steps as f64).round() as u64),
            total_steps,
        };
        let optimizer = AdamW::new(
            vars.iter().map(|(_, v)| v.clone()).collect(),
            AdamWConfig { weight_decay: o.weight_decay, ..AdamWConfig::default() },
        )?;
        // What identifies the run; a checkpoint to resume from must carry the same.
        let state = TrainerState {
            format: 1,
            step: 0,
            total_steps,
            epoch: 0,
            batch: 0,
            options: o.fingerprint(),
            data: data.train.fingerprint(),
            task: task.name().to_string(),
            parameters: vars.iter().map(|(n, _)| n.clone()).collect(),
            labels: model.labels.names.clone(),
            best: None,
            evals_without_improvement: 0,
            losses: Vec::new(),
        };
        Ok(Trainer {
            model,
            options,
            storage,
            observer,
            task,
            lengths: data.train.lengths(),
            data,
            vars,
            optimizer,
            schedule,
            micro_batches_per_epoch,
            steps_per_epoch,
            total_steps,
            state,
            best_parameters: None,
            resumed_from: None,
            last_checkpoint: None,
            last_metrics: None,
            window: Window::new(),
            run_examples: 0,
            started,
        })
    }

    /// Continue from `resumeFrom`: tensors, optimiser moments, best weights and position as the
    /// checkpoint saved them. Refused unless the checkpoint was written by this same run
    /// (adapters, options, data), so the resumed run ends exactly as an uninterrupted one.
    fn resume(&mut self) -> Result<()> {
        let Some(from) = &self.options.resume_from else { return Ok(()) };
        let dir = find_checkpoint(self.storage, from)?;
        let c = read_checkpoint(self.storage, &dir)?;
        let mismatch = |what: &str| {
            Error::InvalidOption(format!("resumeFrom {dir}: the checkpoint was written with different {what}; resume with the same settings and data"))
        };
        // The fresh state holds this run's adapters, options and data fingerprints.
        let run = &self.state;
        if c.state.parameters != run.parameters {
            return Err(mismatch("adapters (their names, modules or parameters)"));
        }
        if c.state.options != run.options {
            return Err(mismatch(&format!("training options ({} there)", c.state.options)));
        }
        if c.state.data != run.data || c.state.task != run.task {
            return Err(mismatch("training data"));
        }
        let plan = ResumePlan {
            total_steps: self.total_steps,
            epochs: self.options.epochs,
            micro_batches_per_epoch: self.micro_batches_per_epoch,
            gradient_accumulation: self.options.gradient_accumulation,
            labels: &self.model.labels.names,
            shapes: self.vars.iter().map(|(_, v)| v.dims().to_vec()).collect(),
        };
        c.check_against(&dir, &plan)?;
        restore(&self.vars, &c.parameters)?;
        self.optimizer.load_state(&c.optimizer)?;
        self.best_parameters = c.best_parameters;
        self.resumed_from = Some(c.state.step);
        self.state = c.state;
        Ok(())
    }

    /// Refused now, not after steps were taken, when a checkpoint or the final adapter would
    /// replace something kronlora did not write.
    fn check_output_dir(&self) -> Result<()> {
        match &self.options.output_dir {
            Some(out) => {
                check_output_dir(self.storage, out, self.state.step..=self.total_steps, self.single_adapter().is_some())
            }
            None => Ok(()),
        }
    }

    /// Train to the end (all epochs, `maxSteps`, early stopping or cancellation), then finish.
    fn run(mut self) -> Result<TrainResult> {
        self.observer.event(&TrainEvent::Start {
            task: self.task.name().into(),
            total_steps: self.total_steps,
            epochs: self.options.epochs,
            train_examples: self.data.train.len(),
            validation_examples: self.data.validation.as_ref().map_or(0, |v| v.len()),
            trainable_parameters: self.vars.iter().map(|(_, v)| v.elem_count()).sum(),
            adapters: self.model.active_adapters().into_iter().map(|a| a.name).collect(),
            resumed_from_step: self.resumed_from,
        });
        // Throughput counts from here, not from before the resume.
        self.window = Window::new();
        let reason = self.train_epochs()?;
        self.finish(reason)
    }

    /// Epochs from the saved position on, until the run stops.
    fn train_epochs(&mut self) -> Result<StopReason> {
        while self.state.epoch < self.options.epochs {
            if let Some(reason) = self.train_epoch()? {
                return Ok(reason);
            }
        }
        // The epochs ran out; if `maxSteps` was reached short of all their steps, it is what ended the run.
        let max_steps_reached = self.options.max_steps.is_some_and(|m| self.state.step >= m);
        let epochs_steps = self.options.epochs as u64 * self.steps_per_epoch;
        Ok(if max_steps_reached && self.state.step < epochs_steps {
            StopReason::MaxSteps
        } else {
            StopReason::Completed
        })
    }

    /// The rest of the current epoch, from `state.batch` on: optimiser steps over groups of
    /// `gradientAccumulation` micro-batches, each followed by what is due after it. Some reason
    /// when the run stops within the epoch.
    fn train_epoch(&mut self) -> Result<Option<StopReason>> {
        // Seeded by epoch, so a resumed run sees the same batches in the same order.
        let batches = bucketed_batches(
            &self.lengths,
            self.options.batch_size,
            self.options.seed.wrapping_add(self.state.epoch as u64),
        );
        while self.state.batch < batches.len() {
            if self.state.step >= self.total_steps {
                return Ok(Some(StopReason::MaxSteps));
            }
            let end = (self.state.batch + self.options.gradient_accumulation).min(batches.len());
            let stats = self.optimizer_step(&batches[self.state.batch..end])?;
            self.log_step(&stats);
            let epoch_end = self.state.batch >= batches.len();
            if epoch_end {
                // The position is the start of the next epoch.
                self.state.epoch += 1;
                self.state.batch = 0;
            }
            if let Some(reason) = self.after_step(epoch_end)? {
                return Ok(Some(reason));
            }
            if epoch_end {
                return Ok(None);
            }
        }
        // An epoch with no batches left (resumed exactly at its end).
        self.state.epoch += 1;
        self.state.batch = 0;
        Ok(None)
    }

    /// One optimiser step over the micro-batches `group` (the next ones of the epoch): their
    /// gradients summed, the sum clipped, AdamW applied, and the position moved past them.
    /// A non-finite loss or gradient norm stops the run before any tensor changes.
    fn optimizer_step(&mut self, group: &[Vec<usize>]) -> Result<StepStats> {
        let o = self.options;
        let mut gradients: Vec<Option<Tensor>> = vec![None; self.vars.len()];
        let mut step_loss = 0f64;
        for (j, indices) in group.iter().enumerate() {
            // Dropout masks depend on the position only, so a resumed run draws the same ones.
            let position = ((self.state.epoch as u64) << 32) ^ (self.state.batch + j) as u64;
            self.model.set_dropout_seed(Some(mix(o.seed ^ mix(position))));
            let (model, data, n) = (self.model, &self.data.train, group.len() as f64);
            // On the compute pool (see `compute_pool`); the loss's value comes back to check it here.
            let checkpointed = o.gradient_checkpointing.then(|| self.vars.iter().map(|(_, v)| v.clone()).collect());
            let computed = crate::compute_pool::tracked_on(model.device(), || -> Result<_> {
                with_checkpointing(checkpointed, || {
                    let batch = data.loss(model, indices)?;
                    // Scaled so the summed gradients are those of the mean over the group.
                    let loss = (batch.loss / n)?;
                    let value = loss.to_scalar::<f32>()? as f64;
                    if !value.is_finite() {
                        return Ok((batch.tokens, value, None));
                    }
                    let grads = loss.backward()?;
                    // Checkpointed blocks hand over their parameters' gradients beside the
                    // outer backward's (none without checkpointing).
                    Ok((batch.tokens, value, Some((grads, take_parameter_grads()))))
                })
            });
            self.model.set_dropout_seed(None);
            let (tokens, value, grads) = computed?;
            let Some(grads) = grads else {
                return Err(self
                    .non_finite(&format!("the training loss is {value}; lower the learning rate or check the data")));
            };
            let (grads, from_blocks) = grads;
            accumulate(&mut gradients, &self.vars, &grads)?;
            drop(grads);
            for (sum, g) in gradients.iter_mut().zip(from_blocks) {
                if let Some(g) = g {
                    add_gradient(sum, &g)?;
                }
            }
            step_loss += value;
            self.window.examples += indices.len();
            self.run_examples += indices.len();
            self.window.tokens += tokens;
        }
        let norm = match o.max_grad_norm {
            Some(max) => clip_grads(&mut gradients, max)?,
            None => grad_norm(&gradients)?,
        };
        if !norm.is_finite() {
            return Err(self.non_finite(&format!("the gradient norm is {norm}; lower the learning rate")));
        }
        let lr = self.schedule.lr(self.state.step);
        self.optimizer.step_with(&gradients, lr)?;
        self.state.step += 1;
        self.state.batch += group.len();
        self.state.losses.push(step_loss);
        Ok(StepStats { loss: step_loss, grad_norm: norm, learning_rate: lr })
    }

    /// The error for a non-finite value met during the coming step: it says which parameters
    /// the model holds (those of the step before) and the last good checkpoint.
    fn non_finite(&self, problem: &str) -> Error {
        Error::NonFinite(format!(
            "step {}: {problem}. Parameters are those after step {}{}",
            self.state.step + 1,
            self.state.step,
            self.last_checkpoint.as_ref().map_or(String::new(), |c| format!("; the last good checkpoint is {c}"))
        ))
    }

    /// A step event every `logEvery` steps and at the last step, with the throughput since the
    /// previous one.
    fn log_step(&mut self, stats: &StepStats) {
        let step = self.state.step;
        if !step.is_multiple_of(self.options.log_every) && step != self.total_steps {
            return;
        }
        let seconds = self.window.started.elapsed().as_secs_f64().max(1e-9);
        self.observer.event(&TrainEvent::Step {
            step,
            total_steps: self.total_steps,
            epoch: self.state.epoch,
            loss: stats.loss,
            learning_rate: stats.learning_rate,
            grad_norm: stats.grad_norm,
            examples_per_second: self.window.examples as f64 / seconds,
            tokens_per_second: self.window.tokens as f64 / seconds,
            elapsed_seconds: self.started.elapsed().as_secs_f64(),
        });
        self.window = Window::new();
    }

    /// What is due after an optimiser step (`epoch_end`: it ended an epoch): an evaluation, then
    /// a checkpoint, which a stop always gets so the run can resume. Some reason when the run
    /// stops here: the observer's cancellation, or early stopping.
    fn after_step(&mut self, epoch_end: bool) -> Result<Option<StopReason>> {
        let o = self.options;
        let step = self.state.step;
        let eval_now = match o.eval_every {
            Some(n) => step.is_multiple_of(n),
            None => epoch_end,
        };
        if eval_now {
            self.evaluate()?;
        }
        let stop_early = o.early_stopping.as_ref().is_some_and(|e| self.state.evals_without_improvement >= e.patience);
        let cancelled = self.observer.should_stop();
        let checkpoint_now = match o.checkpoint_every {
            Some(n) => step.is_multiple_of(n),
            None => eval_now || epoch_end,
        };
        if checkpoint_now || cancelled || stop_early {
            self.write_checkpoint()?;
        }
        Ok(if cancelled {
            Some(StopReason::Cancelled)
        } else if stop_early {
            Some(StopReason::EarlyStopped)
        } else {
            None
        })
    }

    /// Evaluate on the validation data (nothing without it), without dropout or gradients;
    /// an improvement on the best so far keeps these tensors as the best.
    fn evaluate(&mut self) -> Result<()> {
        let Some(validation) = &self.data.validation else { return Ok(()) };
        let (model, metric) = (self.model, self.options.metric);
        model.set_dropout_seed(None);
        let metrics = crate::compute_pool::no_grad_on(model.device(), || {
            validation.evaluate(model, self.options.eval_batch_size)
        })?;
        let value = metrics.get(metric).ok_or_else(|| {
            Error::InvalidOption(format!(
                "metric \"{}\" is not computed for task \"{}\"",
                metric.name(),
                self.task.name()
            ))
        })?;
        let improved = self.improves_on_best(value);
        if improved {
            self.state.best = Some(BestSoFar { step: self.state.step, value, metrics: metrics.clone() });
            self.state.evals_without_improvement = 0;
            self.best_parameters = Some(snapshot(&self.vars)?);
        } else {
            self.state.evals_without_improvement += 1;
        }
        self.observer.event(&TrainEvent::Eval {
            step: self.state.step,
            epoch: self.state.epoch,
            metrics: metrics.clone(),
            is_best: improved,
        });
        self.last_metrics = Some((self.state.step, metrics));
        Ok(())
    }

    /// Whether `value` of the watched metric beats the best so far by more than early
    /// stopping's `minDelta` (the first finite value always does).
    fn improves_on_best(&self, value: f64) -> bool {
        let metric = self.options.metric;
        let min_delta = self.options.early_stopping.as_ref().map_or(0.0, |e| e.min_delta);
        match &self.state.best {
            None => value.is_finite(),
            Some(b) if metric.higher_is_better() => value > b.value + min_delta,
            Some(b) => value < b.value - min_delta,
        }
    }

    /// The adapter trained, when exactly one is active: only then do checkpoints carry its PEFT
    /// files and does the run save `outputDir/adapter` (a PEFT adapter directory holds one).
    fn single_adapter(&self) -> Option<String> {
        match self.model.active_adapters().as_slice() {
            [one] => Some(one.name.clone()),
            _ => None,
        }
    }

    /// A checkpoint of the current position in `outputDir` (nothing without one), then
    /// checkpoints beyond `keepCheckpoints` removed.
    fn write_checkpoint(&mut self) -> Result<()> {
        let Some(out) = &self.options.output_dir else { return Ok(()) };
        let c = Checkpoint {
            state: self.state.clone(),
            parameters: snapshot(&self.vars)?,
            best_parameters: self.best_parameters.clone(),
            optimizer: self.optimizer.state()?,
        };
        let adapter_files = match self.single_adapter() {
            Some(name) => self.model.adapter_files(Some(&name))?,
            None => Vec::new(),
        };
        let dir = save_checkpoint(self.storage, out, &c, adapter_files)?;
        // Older checkpoints beyond `keepCheckpoints` go once the new one is in place.
        if self.options.keep_checkpoints > 0 {
            rotate_checkpoints(self.storage, out, &dir, self.options.keep_checkpoints)?;
        }
        self.observer.event(&TrainEvent::Checkpoint { step: self.state.step, path: dir.clone() });
        self.last_checkpoint = Some(dir);
        Ok(())
    }

    /// End the run: the last step evaluated and checkpointed, the best tensors back, the final
    /// adapter saved, and the result reported (also as the done event).
    fn finish(mut self, reason: StopReason) -> Result<TrainResult> {
        // A cancelled run ends as it stands, as the checkpoint written at the stop saved it: no last
        // evaluation, no best tensors put back, no final adapter.
        let cancelled = reason == StopReason::Cancelled;
        if !cancelled {
            self.evaluate_last_step()?;
        }
        let load_best = self.options.load_best_at_end.unwrap_or(self.data.validation.is_some());
        let metrics = if !cancelled && load_best { self.load_best()? } else { None };
        let metrics = metrics.or_else(|| self.last_metrics.take().map(|(_, m)| m));
        let adapter_dir = if cancelled { None } else { self.save_final_adapter()? };
        let seconds = self.started.elapsed().as_secs_f64();
        let result = TrainResult {
            reason,
            step: self.state.step,
            total_steps: self.total_steps,
            epoch: self.state.epoch.min(self.options.epochs),
            train_loss: self.state.losses.last().copied(),
            metrics,
            best_step: self.state.best.as_ref().map(|b| b.step).filter(|_| load_best),
            losses: self.state.losses.clone(),
            checkpoint: self.last_checkpoint.clone(),
            adapter_dir,
            seconds,
            examples_per_second: self.run_examples as f64 / seconds.max(1e-9),
        };
        self.observer.event(&TrainEvent::Done(result.clone()));
        Ok(result)
    }

    /// Evaluate the last step when the loop did not (with validation data), and checkpoint it
    /// with that evaluation unless its checkpoint is already written.
    fn evaluate_last_step(&mut self) -> Result<()> {
        let evaluated = self.last_metrics.as_ref().is_some_and(|(step, _)| *step == self.state.step);
        if self.data.validation.is_none() || evaluated {
            return Ok(());
        }
        self.evaluate()?;
        let this_step = checkpoint_dir(self.options.output_dir.as_deref().unwrap_or(""), self.state.step);
        if self.last_checkpoint.as_ref().is_none_or(|c| *c != this_step) {
            self.write_checkpoint()?;
        }
        Ok(())
    }

    /// Put back the tensors of the best evaluation, if there was one; its metrics.
    fn load_best(&self) -> Result<Option<EvalMetrics>> {
        let (Some(best), Some(b)) = (&self.best_parameters, &self.state.best) else { return Ok(None) };
        restore(&self.vars, best)?;
        Ok(Some(b.metrics.clone()))
    }

    /// Save the adapter to `outputDir/adapter` when there is an output directory and one adapter;
    /// where it went.
    fn save_final_adapter(&self) -> Result<Option<String>> {
        match &self.options.output_dir {
            Some(out) if self.single_adapter().is_some() => {
                let dir = join(out, "adapter");
                self.model.save_adapter(self.storage, &dir, self.single_adapter().as_deref())?;
                Ok(Some(dir))
            }
            _ => Ok(None),
        }
    }
}

/// Evaluate `model` on the records `data` names with `options`.
pub fn evaluate_model(
    model: &PretrainedModel,
    data: &DataSpec,
    options: &EvalOptions,
    storage: &dyn Storage,
) -> Result<EvalMetrics> {
    let task = options.task.unwrap_or_else(|| default_task(model));
    check_task(model, task)?;
    let _reuse = ReuseFreedMemory::begin();
    let records = read_records(data, task, storage, "evaluation data")?;
    let mut labels = model.labels.clone();
    let encoded =
        encode(model, task, &records, options.max_length, &mut labels, false, &data.name("data"), &mut || false)?
            .expect("never asked to stop");
    model.set_dropout_seed(None);
    crate::compute_pool::no_grad_on(model.device(), || encoded.evaluate(model, options.batch_size))
}
