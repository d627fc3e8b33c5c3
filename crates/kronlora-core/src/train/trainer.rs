//! The training loop for every task: seeded length-bucketed batches, AdamW with a warmup
//! schedule, gradient accumulation and clipping, adapter dropout, periodic evaluation with
//! early stopping and the best weights kept, atomic checkpoints, exact resume, cancellation,
//! and a stop on any non-finite loss or gradient (parameters and checkpoints stay as they were).

use web_time::Instant;

use candle_core::{Tensor, Var};

use super::checkpoint::{
    check_output_dir, checkpoint_dir, find_checkpoint, read_checkpoint, rotate_checkpoints, save_checkpoint, BestSoFar,
    Checkpoint, ResumePlan, TrainerState,
};
use super::events::{StopReason, TrainEvent, TrainObserver, TrainResult};
use super::options::{data_spec, Metric, TrainOptions, TrainTask};
use super::task_data::{check_task, default_task, encode, read_records, EvalMetrics, TaskData};
use super::{clip_grads, grad_norm, AdamW, AdamWConfig, LrSchedule};
use crate::data::{bucketed_batches, train_validation_split};
use crate::error::{Error, Result};
use crate::io::{join, Storage};
use crate::pretrained::PretrainedModel;
use crate::TensorData;

/// Trainable tensors with stable names (adapter parameters in model order, then the head).
pub fn trainable_named(model: &PretrainedModel) -> Vec<(String, Var)> {
    let mut out: Vec<(String, Var)> = model
        .adapters()
        .into_iter()
        .flat_map(|(path, name, a)| {
            a.parameters().into_iter().map(move |(p, v)| (format!("{name}/{path}/{p}"), v.clone())).collect::<Vec<_>>()
        })
        .collect();
    if let Some(head) = &model.head {
        out.extend(head.parameters().into_iter().map(|(n, v)| (format!("head/{n}"), v.clone())));
    }
    out
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

/// Read, tokenise and split the data of a run; `None` when the observer asked to stop meanwhile.
fn prepare_data(
    model: &mut PretrainedModel,
    o: &TrainOptions,
    task: TrainTask,
    storage: &dyn Storage,
    observer: &mut dyn TrainObserver,
) -> Result<Option<(TaskData, Option<TaskData>)>> {
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
    model.labels = labels;
    Ok(Some((train, validation)))
}

/// Train the model's adapters (and head) as `options_json` says, reading data and writing
/// checkpoints through `storage`; events go to `observer`.
pub fn train(
    model: &mut PretrainedModel,
    options_json: &str,
    storage: &dyn Storage,
    observer: &mut dyn TrainObserver,
) -> Result<TrainResult> {
    let o = TrainOptions::from_json(options_json)?;
    let task = o.task.unwrap_or_else(|| default_task(model));
    check_task(model, task)?;
    let vars = trainable_named(model);
    if vars.is_empty() {
        return Err(Error::InvalidState(
            "nothing to train: add an adapter (model.addAdapter) or load one first".into(),
        ));
    }
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
    let prepare_started = Instant::now();
    let Some((train, validation)) = prepare_data(model, &o, task, storage, observer)? else {
        // Cancelled while the data was being read: nothing was trained or written.
        let result = TrainResult {
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
            seconds: prepare_started.elapsed().as_secs_f64(),
            examples_per_second: 0.0,
        };
        observer.event(&TrainEvent::Done(result.clone()));
        return Ok(result);
    };
    if validation.is_none() && (o.early_stopping.is_some() || o.eval_every.is_some()) {
        return Err(Error::InvalidOption(
            "earlyStopping and evalEvery need validation data: give validationData, or a validationSplit above 0 with at least 2 records".into(),
        ));
    }
    let model: &PretrainedModel = model;
    let run_started = Instant::now();

    let lengths = train.lengths();
    let micro_per_epoch = train.len().div_ceil(o.batch_size);
    let steps_per_epoch = micro_per_epoch.div_ceil(o.gradient_accumulation) as u64;
    let total_steps = (o.epochs as u64 * steps_per_epoch).min(o.max_steps.unwrap_or(u64::MAX));
    let schedule = LrSchedule {
        kind: o.schedule,
        base_lr: o.learning_rate,
        warmup_steps: o.warmup_steps.unwrap_or((o.warmup_ratio * total_steps as f64).round() as u64),
        total_steps,
    };
    let var_list: Vec<Var> = vars.iter().map(|(_, v)| v.clone()).collect();
    let mut optimizer = AdamW::new(var_list, AdamWConfig { weight_decay: o.weight_decay, ..AdamWConfig::default() })?;
    let names: Vec<String> = vars.iter().map(|(n, _)| n.clone()).collect();
    let fingerprint = o.fingerprint();
    let data_fingerprint = train.fingerprint();

    let mut state = TrainerState {
        format: 1,
        step: 0,
        total_steps,
        epoch: 0,
        batch: 0,
        options: fingerprint.clone(),
        data: data_fingerprint.clone(),
        task: task.name().to_string(),
        parameters: names.clone(),
        labels: model.labels.names.clone(),
        best: None,
        evals_without_improvement: 0,
        losses: Vec::new(),
    };
    let mut best_parameters: Option<Vec<TensorData>> = None;
    let mut resumed_from = None;
    if let Some(from) = &o.resume_from {
        let dir = find_checkpoint(storage, from)?;
        let c = read_checkpoint(storage, &dir)?;
        let mismatch = |what: &str| {
            Error::InvalidOption(format!("resumeFrom {dir}: the checkpoint was written with different {what}; resume with the same settings and data"))
        };
        if c.state.parameters != names {
            return Err(mismatch("adapters (their names, modules or parameters)"));
        }
        if c.state.options != fingerprint {
            return Err(mismatch(&format!("training options ({} there)", c.state.options)));
        }
        if c.state.data != data_fingerprint || c.state.task != task.name() {
            return Err(mismatch("training data"));
        }
        let plan = ResumePlan {
            total_steps,
            epochs: o.epochs,
            micro_batches_per_epoch: micro_per_epoch,
            gradient_accumulation: o.gradient_accumulation,
            labels: &model.labels.names,
            shapes: vars.iter().map(|(_, v)| v.dims().to_vec()).collect(),
        };
        c.check_against(&dir, &plan)?;
        restore(&vars, &c.parameters)?;
        optimizer.load_state(&c.optimizer)?;
        best_parameters = c.best_parameters;
        resumed_from = Some(c.state.step);
        state = c.state;
    }

    // Refused now, not after steps were taken, when a checkpoint or the final adapter would
    // replace something kronlora did not write.
    if let Some(out) = &o.output_dir {
        check_output_dir(storage, out, state.step..=total_steps, model.adapter_infos().len() == 1)?;
    }

    observer.event(&TrainEvent::Start {
        task: task.name().into(),
        total_steps,
        epochs: o.epochs,
        train_examples: train.len(),
        validation_examples: validation.as_ref().map_or(0, |v| v.len()),
        trainable_parameters: vars.iter().map(|(_, v)| v.elem_count()).sum(),
        resumed_from_step: resumed_from,
    });

    let adapter_files = |model: &PretrainedModel| -> Result<Vec<(String, Vec<u8>)>> {
        if model.adapter_infos().len() == 1 {
            model.adapter_files(None)
        } else {
            Ok(Vec::new())
        }
    };
    let mut last_checkpoint: Option<String> = None;
    let write_checkpoint = |state: &TrainerState,
                            best: &Option<Vec<TensorData>>,
                            optimizer: &AdamW,
                            observer: &mut dyn TrainObserver|
     -> Result<Option<String>> {
        let Some(out) = &o.output_dir else { return Ok(None) };
        let c = Checkpoint {
            state: state.clone(),
            parameters: snapshot(&vars)?,
            best_parameters: best.clone(),
            optimizer: optimizer.state()?,
        };
        let dir = save_checkpoint(storage, out, &c, adapter_files(model)?)?;
        // Older checkpoints beyond `keepCheckpoints` go once the new one is in place.
        if o.keep_checkpoints > 0 {
            rotate_checkpoints(storage, out, &dir, o.keep_checkpoints)?;
        }
        observer.event(&TrainEvent::Checkpoint { step: state.step, path: dir.clone() });
        Ok(Some(dir))
    };

    let metric = o.metric;
    let evaluate = |state: &mut TrainerState,
                    best: &mut Option<Vec<TensorData>>,
                    observer: &mut dyn TrainObserver|
     -> Result<Option<EvalMetrics>> {
        let Some(v) = &validation else { return Ok(None) };
        model.set_dropout_seed(None);
        let metrics = crate::grad_mode::no_grad(|| v.evaluate(model, o.eval_batch_size))?;
        let value = metrics.get(metric).ok_or_else(|| {
            Error::InvalidOption(format!("metric \"{}\" is not computed for task \"{}\"", metric.name(), task.name()))
        })?;
        let min_delta = o.early_stopping.as_ref().map_or(0.0, |e| e.min_delta);
        let improved = match &state.best {
            None => value.is_finite(),
            Some(b) if metric.higher_is_better() => value > b.value + min_delta,
            Some(b) => value < b.value - min_delta,
        };
        if improved {
            state.best = Some(BestSoFar { step: state.step, value, metrics: metrics.clone() });
            state.evals_without_improvement = 0;
            *best = Some(snapshot(&vars)?);
        } else {
            state.evals_without_improvement += 1;
        }
        observer.event(&TrainEvent::Eval {
            step: state.step,
            epoch: state.epoch,
            metrics: metrics.clone(),
            is_best: improved,
        });
        Ok(Some(metrics))
    };

    let mut reason = StopReason::Completed;
    let mut last_metrics: Option<(u64, EvalMetrics)> = None;
    let (mut window_examples, mut window_tokens, mut window_start) = (0usize, 0usize, Instant::now());
    let mut run_examples = 0usize;
    'epochs: while state.epoch < o.epochs {
        let batches = bucketed_batches(&lengths, o.batch_size, o.seed.wrapping_add(state.epoch as u64));
        while state.batch < batches.len() {
            if state.step >= total_steps {
                reason = StopReason::MaxSteps;
                break 'epochs;
            }
            let group = &batches[state.batch..(state.batch + o.gradient_accumulation).min(batches.len())];
            let step = state.step + 1;
            let mut accumulated: Vec<Option<Tensor>> = vec![None; vars.len()];
            let mut step_loss = 0f64;
            for (j, indices) in group.iter().enumerate() {
                model
                    .set_dropout_seed(Some(mix(o.seed ^ mix(((state.epoch as u64) << 32) ^ (state.batch + j) as u64))));
                let batch = train.loss(model, indices);
                model.set_dropout_seed(None);
                let batch = batch?;
                let loss = (batch.loss / group.len() as f64)?;
                let value = loss.to_scalar::<f32>()? as f64;
                if !value.is_finite() {
                    return Err(Error::NonFinite(format!(
                        "step {step}: the training loss is {value}; lower the learning rate or check the data. Parameters are those after step {}{}",
                        step - 1,
                        last_checkpoint.as_ref().map_or(String::new(), |c| format!("; the last good checkpoint is {c}"))
                    )));
                }
                let grads = loss.backward()?;
                for (acc, (_, v)) in accumulated.iter_mut().zip(&vars) {
                    if let Some(g) = grads.get(v.as_tensor()) {
                        // Detached, so the running sum does not keep this micro-batch's graph alive.
                        let g = g.detach();
                        *acc = Some(match acc.take() {
                            Some(a) => (a + g)?,
                            None => g,
                        });
                    }
                }
                step_loss += value;
                window_examples += indices.len();
                run_examples += indices.len();
                window_tokens += batch.tokens;
            }
            let norm = match o.max_grad_norm {
                Some(max) => clip_grads(&mut accumulated, max)?,
                None => grad_norm(&accumulated)?,
            };
            if !norm.is_finite() {
                return Err(Error::NonFinite(format!(
                    "step {step}: the gradient norm is {norm}; lower the learning rate. Parameters are those after step {}{}",
                    step - 1,
                    last_checkpoint.as_ref().map_or(String::new(), |c| format!("; the last good checkpoint is {c}"))
                )));
            }
            let lr = schedule.lr(state.step);
            optimizer.step_with(&accumulated, lr)?;
            state.step = step;
            state.batch += group.len();
            state.losses.push(step_loss);
            if step % o.log_every == 0 || step == total_steps {
                let seconds = window_start.elapsed().as_secs_f64().max(1e-9);
                observer.event(&TrainEvent::Step {
                    step,
                    total_steps,
                    epoch: state.epoch,
                    loss: step_loss,
                    learning_rate: lr,
                    grad_norm: norm,
                    examples_per_second: window_examples as f64 / seconds,
                    tokens_per_second: window_tokens as f64 / seconds,
                    elapsed_seconds: run_started.elapsed().as_secs_f64(),
                });
                (window_examples, window_tokens, window_start) = (0, 0, Instant::now());
            }
            if state.batch >= batches.len() {
                // The epoch is done: the position is the start of the next one.
                state.epoch += 1;
                state.batch = 0;
            }
            let epoch_end = state.batch == 0;
            let eval_now = match o.eval_every {
                Some(n) => step % n == 0,
                None => epoch_end,
            };
            if eval_now {
                if let Some(m) = evaluate(&mut state, &mut best_parameters, observer)? {
                    last_metrics = Some((step, m));
                }
            }
            let stop_early = o.early_stopping.as_ref().is_some_and(|e| state.evals_without_improvement >= e.patience);
            let cancelled = observer.should_stop();
            let checkpoint_now = match o.checkpoint_every {
                Some(n) => step % n == 0,
                None => eval_now || epoch_end,
            };
            if checkpoint_now || cancelled || stop_early {
                if let Some(dir) = write_checkpoint(&state, &best_parameters, &optimizer, observer)? {
                    last_checkpoint = Some(dir);
                }
            }
            if cancelled {
                reason = StopReason::Cancelled;
                break 'epochs;
            }
            if stop_early {
                reason = StopReason::EarlyStopped;
                break 'epochs;
            }
            if state.batch == 0 {
                continue 'epochs;
            }
        }
        // An epoch with no batches left (resumed exactly at its end).
        state.epoch += 1;
        state.batch = 0;
    }
    if reason == StopReason::Completed
        && o.max_steps.is_some_and(|m| state.step >= m)
        && state.step < o.epochs as u64 * steps_per_epoch
    {
        reason = StopReason::MaxSteps;
    }
    if reason != StopReason::Cancelled
        && validation.is_some()
        && last_metrics.as_ref().is_none_or(|(s, _)| *s != state.step)
    {
        if let Some(m) = evaluate(&mut state, &mut best_parameters, observer)? {
            last_metrics = Some((state.step, m));
        }
        if last_checkpoint
            .as_ref()
            .is_none_or(|c| *c != checkpoint_dir(o.output_dir.as_deref().unwrap_or(""), state.step))
        {
            if let Some(dir) = write_checkpoint(&state, &best_parameters, &optimizer, observer)? {
                last_checkpoint = Some(dir);
            }
        }
    }
    let mut metrics = last_metrics.map(|(_, m)| m);
    let mut best_step = state.best.as_ref().map(|b| b.step);
    let load_best = o.load_best_at_end.unwrap_or(validation.is_some());
    if reason != StopReason::Cancelled && load_best {
        if let (Some(best), Some(b)) = (&best_parameters, &state.best) {
            restore(&vars, best)?;
            metrics = Some(b.metrics.clone());
        }
    } else {
        best_step = best_step.filter(|_| load_best);
    }
    let adapter_dir = match (&o.output_dir, reason) {
        (Some(out), r) if r != StopReason::Cancelled && model.adapter_infos().len() == 1 => {
            let dir = join(out, "adapter");
            model.save_adapter(storage, &dir, None)?;
            Some(dir)
        }
        _ => None,
    };
    let seconds = run_started.elapsed().as_secs_f64();
    let result = TrainResult {
        reason,
        step: state.step,
        total_steps,
        epoch: state.epoch.min(o.epochs),
        train_loss: state.losses.last().copied(),
        metrics,
        best_step,
        losses: state.losses.clone(),
        checkpoint: last_checkpoint.clone(),
        adapter_dir,
        seconds,
        examples_per_second: run_examples as f64 / seconds.max(1e-9),
    };
    observer.event(&TrainEvent::Done(result.clone()));
    Ok(result)
}

/// `train` with the result as JSON (what the bindings return).
pub fn train_json(
    model: &mut PretrainedModel,
    options_json: &str,
    storage: &dyn Storage,
    observer: &mut dyn TrainObserver,
) -> Result<String> {
    let result = train(model, options_json, storage, observer)?;
    serde_json::to_string(&result).map_err(|e| Error::InvalidState(format!("cannot serialise the result: {e}")))
}

/// `evaluate_model` with the metrics as JSON.
pub fn evaluate_json(
    model: &PretrainedModel,
    data_json: &str,
    options_json: &str,
    storage: &dyn Storage,
) -> Result<String> {
    let metrics = evaluate_model(model, data_json, options_json, storage)?;
    serde_json::to_string(&metrics).map_err(|e| Error::InvalidState(format!("cannot serialise the metrics: {e}")))
}

/// Evaluate `model` on `data_json` (a path or records) with `EvalOptions` JSON.
pub fn evaluate_model(
    model: &PretrainedModel,
    data_json: &str,
    options_json: &str,
    storage: &dyn Storage,
) -> Result<EvalMetrics> {
    let o = super::EvalOptions::from_json(options_json)?;
    let task = o.task.unwrap_or_else(|| default_task(model));
    check_task(model, task)?;
    let data: serde_json::Value =
        crate::data::parse_json(data_json).map_err(|e| Error::InvalidOption(format!("invalid data: {e}")))?;
    let spec = data_spec("data", &data)?;
    let records = read_records(&spec, task, storage, "evaluation data")?;
    let mut labels = model.labels.clone();
    let encoded = encode(model, task, &records, o.max_length, &mut labels, false, &spec.name("data"), &mut || false)?
        .expect("never asked to stop");
    model.set_dropout_seed(None);
    crate::grad_mode::no_grad(|| encoded.evaluate(model, o.batch_size))
}
