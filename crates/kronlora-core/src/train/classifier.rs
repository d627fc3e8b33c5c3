//! The training loop for sequence classification: seeded length-bucketed batches, AdamW with a
//! warmup schedule, gradient accumulation and clipping, evaluation, and a stop on any
//! non-finite loss or gradient (parameters are left as they were before that step).

use std::time::Instant;

use candle_core::Tensor;

use super::{clip_grads, cross_entropy, AdamW, AdamWConfig, LrSchedule, ScheduleKind};
use crate::data::{bucketed_batches, classification_batch, EncodedExample};
use crate::error::{Error, Result};
use crate::pretrained::PretrainedModel;

#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub warmup_ratio: f64,
    pub schedule: ScheduleKind,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (None: no clipping).
    pub max_grad_norm: Option<f64>,
    /// Micro-batches per optimiser step.
    pub gradient_accumulation: usize,
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: 1,
            batch_size: 16,
            learning_rate: 1e-3,
            warmup_ratio: 0.06,
            schedule: ScheduleKind::Linear,
            weight_decay: 0.01,
            max_grad_norm: Some(1.0),
            gradient_accumulation: 1,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepEvent {
    pub step: u64,
    pub epoch: usize,
    pub loss: f64,
    pub learning_rate: f64,
    pub examples_per_second: f64,
    pub tokens_per_second: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EvalMetrics {
    pub loss: f64,
    pub accuracy: f64,
}

/// Mean loss and accuracy over `examples`.
pub fn evaluate(model: &PretrainedModel, examples: &[EncodedExample], batch_size: usize) -> Result<EvalMetrics> {
    if examples.is_empty() {
        return Err(Error::InvalidData("the evaluation set is empty".into()));
    }
    let device = crate::default_device();
    let (mut loss, mut correct) = (0f64, 0usize);
    let order: Vec<usize> = (0..examples.len()).collect();
    for indices in order.chunks(batch_size.max(1)) {
        let batch = classification_batch(examples, indices, model.tokenizer.pad_token_id, &device)?;
        let logits = model.classification_logits(&batch.ids, &batch.mask)?;
        loss += cross_entropy(&logits, &batch.labels)?.to_scalar::<f32>()? as f64 * indices.len() as f64;
        let predicted = logits.argmax(1)?.to_vec1::<u32>()?;
        correct += predicted.iter().zip(batch.labels.to_vec1::<u32>()?).filter(|(p, l)| **p == *l).count();
    }
    Ok(EvalMetrics { loss: loss / examples.len() as f64, accuracy: correct as f64 / examples.len() as f64 })
}

/// Train the model's adapters and head on `train`; `on_step` sees every optimiser step and
/// returns false to stop. Returns the number of optimiser steps taken.
pub fn train_classification(
    model: &PretrainedModel,
    train: &[EncodedExample],
    options: &TrainOptions,
    on_step: &mut dyn FnMut(&StepEvent) -> bool,
) -> Result<u64> {
    let o = options;
    if o.epochs == 0 || o.batch_size == 0 || o.gradient_accumulation == 0 {
        return Err(Error::InvalidOption("epochs, batchSize and gradientAccumulation must be positive integers".into()));
    }
    if !(o.learning_rate.is_finite() && o.learning_rate > 0.0) {
        return Err(Error::InvalidOption(format!("learningRate must be a positive number, got {}", o.learning_rate)));
    }
    if train.is_empty() {
        return Err(Error::InvalidData("the training set is empty".into()));
    }
    let vars = model.trainable_variables();
    if vars.is_empty() {
        return Err(Error::InvalidState("nothing to train: add an adapter (or load a classification head) first".into()));
    }
    let mut optimizer = AdamW::new(vars.clone(), AdamWConfig { weight_decay: o.weight_decay, ..AdamWConfig::default() })?;
    let lengths: Vec<usize> = train.iter().map(|e| e.ids.len()).collect();
    let micro_per_epoch = train.len().div_ceil(o.batch_size);
    let total_steps = (o.epochs * micro_per_epoch).div_ceil(o.gradient_accumulation) as u64;
    let schedule = LrSchedule {
        kind: o.schedule,
        base_lr: o.learning_rate,
        warmup_steps: (o.warmup_ratio * total_steps as f64).round() as u64,
        total_steps,
    };
    let device = crate::default_device();
    let mut accumulated: Vec<Option<Tensor>> = vec![None; vars.len()];
    let (mut micro, mut window_loss, mut window_examples, mut window_tokens) = (0usize, 0f64, 0usize, 0usize);
    let mut started = Instant::now();
    for epoch in 0..o.epochs {
        for indices in bucketed_batches(&lengths, o.batch_size, o.seed.wrapping_add(epoch as u64)) {
            let batch = classification_batch(train, &indices, model.tokenizer.pad_token_id, &device)?;
            let logits = model.classification_logits(&batch.ids, &batch.mask)?;
            let loss = (cross_entropy(&logits, &batch.labels)? / o.gradient_accumulation as f64)?;
            let value = loss.to_scalar::<f32>()? as f64;
            let step = optimizer.step_count() + 1;
            if !value.is_finite() {
                return Err(Error::NonFinite(format!(
                    "step {step}: the loss is {value}; lower the learning rate or check the data (parameters are unchanged since step {})",
                    step - 1
                )));
            }
            let grads = loss.backward()?;
            for (acc, v) in accumulated.iter_mut().zip(&vars) {
                if let Some(g) = grads.get(v.as_tensor()) {
                    // Detached, so the accumulated sum does not keep this step's graph alive.
                    let g = g.detach();
                    *acc = Some(match acc.take() {
                        Some(a) => (a + g)?,
                        None => g,
                    });
                }
            }
            micro += 1;
            window_loss += value;
            window_examples += indices.len();
            window_tokens += batch.tokens;
            let last = epoch + 1 == o.epochs && micro % micro_per_epoch == 0;
            if micro % o.gradient_accumulation != 0 && !last {
                continue;
            }
            let norm = match o.max_grad_norm {
                Some(max) => clip_grads(&mut accumulated, max)?,
                None => super::grad_norm(&accumulated)?,
            };
            if !norm.is_finite() {
                return Err(Error::NonFinite(format!(
                    "step {step}: the gradient norm is {norm}; lower the learning rate (parameters are unchanged since step {})",
                    step - 1
                )));
            }
            let lr = schedule.lr(step - 1);
            optimizer.step_with(&accumulated, lr)?;
            accumulated.iter_mut().for_each(|a| *a = None);
            let seconds = started.elapsed().as_secs_f64().max(1e-9);
            let event = StepEvent {
                step,
                epoch,
                loss: window_loss,
                learning_rate: lr,
                examples_per_second: window_examples as f64 / seconds,
                tokens_per_second: window_tokens as f64 / seconds,
            };
            (window_loss, window_examples, window_tokens) = (0.0, 0, 0);
            started = Instant::now();
            if !on_step(&event) {
                return Ok(optimizer.step_count());
            }
        }
    }
    Ok(optimizer.step_count())
}
