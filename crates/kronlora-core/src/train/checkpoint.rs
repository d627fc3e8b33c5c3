//! Training checkpoints: everything a run needs to continue exactly where it stopped.
//!
//! A checkpoint directory holds `trainer_state.json` (position in the data, scheduler step,
//! best metric, settings and data fingerprints), `trainable.safetensors` (every trainable
//! tensor, and the best ones seen so far), `optimizer.safetensors` (AdamW's moments), and,
//! when the model has one adapter, that adapter in PEFT's layout, so a checkpoint loads with
//! `loadAdapter` too. Dropout masks derive from (seed, position), so no RNG state is needed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::task_data::EvalMetrics;
use super::AdamWState;
use crate::error::{Error, Result};
use crate::io::{
    check_writable, is_owned_dir, join, read_safetensors_bytes, remove_owned_dir, safetensors_bytes, write_owned_dir,
    EntryKind, Marker, OwnedLayout, Storage,
};
use crate::pretrained::{ADAPTER_CONFIG_FILE, ADAPTER_LAYOUT, ADAPTER_MARKER, ADAPTER_WEIGHTS_FILE};
use crate::TensorData;

pub const STATE_FILE: &str = "trainer_state.json";
const TRAINABLE_FILE: &str = "trainable.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// kronlora's `trainer_state.json` (Hugging Face Trainer's has none of these fields).
pub const STATE_MARKER: Marker = Marker {
    file: STATE_FILE,
    holds: "kronlora's `format`, `totalSteps`, `parameters` and `options`",
    is_ours: |bytes| {
        serde_json::from_slice::<Value>(bytes).is_ok_and(|v| {
            v["format"].is_u64() && v["totalSteps"].is_u64() && v["parameters"].is_array() && v["options"].is_object()
        })
    },
};

/// What training may write, replace and remove in a `checkpoint-NNNNNN` directory.
pub const CHECKPOINT_LAYOUT: OwnedLayout = OwnedLayout {
    what: "checkpoint",
    files: &[TRAINABLE_FILE, OPTIMIZER_FILE, ADAPTER_WEIGHTS_FILE, ADAPTER_CONFIG_FILE, STATE_FILE],
    markers: &[STATE_MARKER, ADAPTER_MARKER],
};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BestSoFar {
    pub step: u64,
    pub value: f64,
    pub metrics: EvalMetrics,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrainerState {
    pub format: u32,
    /// Optimiser steps taken.
    pub step: u64,
    pub total_steps: u64,
    /// The epoch and the index of the next micro-batch in it.
    pub epoch: usize,
    pub batch: usize,
    pub options: Value,
    pub data: String,
    pub task: String,
    pub parameters: Vec<String>,
    pub labels: Vec<String>,
    pub best: Option<BestSoFar>,
    /// Evaluations since the best one (early stopping's patience counter).
    pub evals_without_improvement: usize,
    /// Mean training loss of each optimiser step so far.
    pub losses: Vec<f64>,
}

pub struct Checkpoint {
    pub state: TrainerState,
    pub parameters: Vec<TensorData>,
    pub best_parameters: Option<Vec<TensorData>>,
    pub optimizer: AdamWState,
}

const CHECKPOINT_PREFIX: &str = "checkpoint-";

fn checkpoint_name(step: u64) -> String {
    format!("{CHECKPOINT_PREFIX}{step:06}")
}

pub fn checkpoint_dir(output_dir: &str, step: u64) -> String {
    join(output_dir, &checkpoint_name(step))
}

/// The step of a directory named exactly as kronlora names checkpoints (`checkpoint-000500`;
/// not Hugging Face's `checkpoint-500`).
fn checkpoint_step(name: &str) -> Option<u64> {
    let step: u64 = name.strip_prefix(CHECKPOINT_PREFIX)?.parse().ok()?;
    (checkpoint_name(step) == name).then_some(step)
}

/// The files of a checkpoint (`adapter_files`: the PEFT files to include), in the order they are
/// written: tensors first, the state (the marker) last.
pub fn checkpoint_files(c: &Checkpoint, adapter_files: Vec<(String, Vec<u8>)>) -> Result<Vec<(String, Vec<u8>)>> {
    let mut trainable: Vec<(String, TensorData)> =
        c.parameters.iter().enumerate().map(|(i, t)| (format!("param.{i}"), t.clone())).collect();
    if let Some(best) = &c.best_parameters {
        trainable.extend(best.iter().enumerate().map(|(i, t)| (format!("best.{i}"), t.clone())));
    }
    let mut moments: Vec<(String, TensorData)> =
        c.optimizer.first_moments.iter().enumerate().map(|(i, t)| (format!("m.{i}"), t.clone())).collect();
    moments.extend(c.optimizer.second_moments.iter().enumerate().map(|(i, t)| (format!("v.{i}"), t.clone())));
    let step = c.optimizer.step.to_string();
    let state = serde_json::to_vec_pretty(&c.state)
        .map_err(|e| Error::InvalidState(format!("cannot serialise the trainer state: {e}")))?;
    let mut files = vec![
        (TRAINABLE_FILE.into(), safetensors_bytes(&trainable, &[("format", "pt"), ("step", &step)])?),
        (OPTIMIZER_FILE.into(), safetensors_bytes(&moments, &[("format", "pt"), ("step", &step)])?),
    ];
    files.extend(adapter_files);
    files.push((STATE_FILE.into(), state));
    Ok(files)
}

/// Write checkpoint `c` into `output_dir` (see `io::owned_dir`); returns its directory.
pub fn save_checkpoint(
    storage: &dyn Storage,
    output_dir: &str,
    c: &Checkpoint,
    adapter_files: Vec<(String, Vec<u8>)>,
) -> Result<String> {
    let dir = checkpoint_dir(output_dir, c.state.step);
    write_owned_dir(storage, &dir, &CHECKPOINT_LAYOUT, &checkpoint_files(c, adapter_files)?)?;
    Ok(dir)
}

/// Keep the `keep` latest of kronlora's checkpoints in `output_dir`, `current` always among
/// them; only kronlora's files of the others go (see `io::owned_dir`).
pub fn rotate_checkpoints(storage: &dyn Storage, output_dir: &str, current: &str, keep: usize) -> Result<()> {
    let others: Vec<String> = list_checkpoints(storage, output_dir)?.into_iter().filter(|d| d != current).collect();
    let surplus = others.len().saturating_sub(keep.saturating_sub(1));
    for old in &others[..surplus] {
        remove_owned_dir(storage, old, &CHECKPOINT_LAYOUT, &STATE_MARKER)?;
    }
    Ok(())
}

/// Refuse, before a run takes a step, one whose checkpoints (steps in `steps`) or final adapter
/// (`outputDir/adapter`) would replace something kronlora did not write.
pub fn check_output_dir(
    storage: &dyn Storage,
    output_dir: &str,
    steps: std::ops::RangeInclusive<u64>,
    final_adapter: bool,
) -> Result<()> {
    match storage.kind(output_dir)? {
        EntryKind::Missing => return Ok(()),
        EntryKind::Dir | EntryKind::Symlink => {}
        _ => {
            return Err(Error::WouldOverwrite(format!(
                "outputDir {output_dir} is a file, not a directory; kronlora writes its checkpoints and adapter into a directory: pass a new path or an existing directory"
            )))
        }
    }
    for name in storage.list(output_dir)? {
        if checkpoint_step(&name).is_some_and(|s| steps.contains(&s)) {
            check_writable(storage, &join(output_dir, &name), &CHECKPOINT_LAYOUT, CHECKPOINT_LAYOUT.files)?;
        }
    }
    if final_adapter {
        check_writable(storage, &join(output_dir, "adapter"), &ADAPTER_LAYOUT, ADAPTER_LAYOUT.files)?;
    }
    Ok(())
}

/// `resume_from` is a checkpoint directory, or an output directory holding kronlora's
/// `checkpoint-NNNNNN` directories (the latest is taken; anything else there is ignored).
pub fn find_checkpoint(storage: &dyn Storage, resume_from: &str) -> Result<String> {
    let state_path = join(resume_from, STATE_FILE);
    if storage.exists(&state_path) {
        if !(STATE_MARKER.is_ours)(&storage.read(&state_path)?) {
            return Err(Error::InvalidData(format!(
                "resumeFrom: {state_path} is not a kronlora trainer state (a Hugging Face Trainer checkpoint?); resume from a kronlora checkpoint or output directory"
            )));
        }
        return Ok(resume_from.to_string());
    }
    if !storage.exists(resume_from) {
        return Err(Error::InvalidOption(format!("resumeFrom: {resume_from} does not exist")));
    }
    match list_checkpoints(storage, resume_from)?.pop() {
        Some(dir) => Ok(dir),
        None => Err(Error::InvalidOption(format!(
            "resumeFrom: {resume_from} holds no kronlora checkpoint (no kronlora {STATE_FILE}, no checkpoint-NNNNNN directory with one)"
        ))),
    }
}

/// kronlora's checkpoint directories in `output_dir` (real directories named as kronlora names
/// them, holding its `trainer_state.json`), oldest first.
pub fn list_checkpoints(storage: &dyn Storage, output_dir: &str) -> Result<Vec<String>> {
    if !storage.exists(output_dir) {
        return Ok(Vec::new());
    }
    let mut found: Vec<(u64, String)> = Vec::new();
    for name in storage.list(output_dir)? {
        if let Some(step) = checkpoint_step(&name) {
            let dir = join(output_dir, &name);
            if is_owned_dir(storage, &dir, &STATE_MARKER)? {
                found.push((step, dir));
            }
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, d)| d).collect())
}

/// The `step` a kronlora safetensors file of a checkpoint says it was written at, if it says.
fn written_at_step(bytes: &[u8]) -> Option<String> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).ok()?;
    header.metadata().as_ref()?.get("step").cloned()
}

pub fn read_checkpoint(storage: &dyn Storage, dir: &str) -> Result<Checkpoint> {
    let state_path = join(dir, STATE_FILE);
    let invalid = |e: serde_json::Error| Error::InvalidData(format!("{state_path}: not a kronlora trainer state: {e}"));
    let value: Value = serde_json::from_slice(&storage.read(&state_path)?).map_err(invalid)?;
    // Counts that index memory are `usize`, 32 bits in WASM: one bound for both backends, so a
    // huge value gets the same message everywhere, naming its field.
    for field in ["epoch", "batch", "evalsWithoutImprovement"] {
        if let Some(n) = value[field].as_u64().filter(|n| *n > u32::MAX as u64) {
            return Err(Error::InvalidData(format!(
                "{state_path}: `{field}` is {n}, beyond any run kronlora can make (at most {}); the checkpoint was edited or is damaged: resume from another one, or start afresh",
                u32::MAX
            )));
        }
    }
    let state: TrainerState = serde_json::from_value(value).map_err(invalid)?;
    if state.format != 1 {
        return Err(Error::InvalidData(format!("{state_path}: checkpoint format {} is not supported", state.format)));
    }
    let trainable_path = join(dir, TRAINABLE_FILE);
    let optimizer_path = join(dir, OPTIMIZER_FILE);
    let trainable_bytes = storage.read(&trainable_path)?;
    let optimizer_bytes = storage.read(&optimizer_path)?;
    // The state is written last: tensors of another step mean a write was cut short or files were mixed.
    for (path, bytes) in [(&trainable_path, &trainable_bytes), (&optimizer_path, &optimizer_bytes)] {
        if let Some(step) = written_at_step(bytes).filter(|s| *s != state.step.to_string()) {
            return Err(Error::InvalidData(format!("{path}: written at step {step}, but {state_path} says step {}; the checkpoint is incomplete or mixed: resume from another one", state.step)));
        }
    }
    let trainable = read_safetensors_bytes(&trainable_bytes, &trainable_path)?;
    let moments = read_safetensors_bytes(&optimizer_bytes, &optimizer_path)?;
    let n = state.parameters.len();
    let take = |map: &BTreeMap<String, TensorData>, prefix: &str, path: &str| -> Result<Vec<TensorData>> {
        (0..n)
            .map(|i| {
                map.get(&format!("{prefix}.{i}"))
                    .cloned()
                    .ok_or_else(|| Error::InvalidData(format!("{path}: tensor `{prefix}.{i}` is missing")))
            })
            .collect()
    };
    let best_parameters =
        if trainable.contains_key("best.0") { Some(take(&trainable, "best", &trainable_path)?) } else { None };
    let expected = [
        (&trainable, &trainable_path, n * if best_parameters.is_some() { 2 } else { 1 }),
        (&moments, &optimizer_path, 2 * n),
    ];
    for (map, path, count) in expected {
        if map.len() != count {
            return Err(Error::InvalidData(format!(
                "{path}: holds {} tensors, but `parameters` in {state_path} lists {n} (so {count} are expected); the checkpoint was edited or is damaged",
                map.len()
            )));
        }
    }
    Ok(Checkpoint {
        parameters: take(&trainable, "param", &trainable_path)?,
        best_parameters,
        optimizer: AdamWState {
            step: state.step,
            first_moments: take(&moments, "m", &optimizer_path)?,
            second_moments: take(&moments, "v", &optimizer_path)?,
        },
        state,
    })
}

/// What a run derives from its options, data and model, and a checkpoint it resumes from must agree with.
pub struct ResumePlan<'a> {
    pub total_steps: u64,
    pub epochs: usize,
    pub micro_batches_per_epoch: usize,
    pub gradient_accumulation: usize,
    pub labels: &'a [String],
    /// Of the trainable tensors, in the order of `TrainerState::parameters`.
    pub shapes: Vec<Vec<usize>>,
}

impl Checkpoint {
    /// Refuse (`InvalidData`, naming the file and field) a checkpoint in `dir` that this run could
    /// not have written: a position outside the run, counts that disagree, tensors of the wrong
    /// shape or with non-finite values. Nothing else guards the training loop against them.
    pub fn check_against(&self, dir: &str, plan: &ResumePlan) -> Result<()> {
        let state_path = join(dir, STATE_FILE);
        let s = &self.state;
        let bad = |field: &str, what: String| {
            Error::InvalidData(format!("{state_path}: `{field}` {what}; the checkpoint was edited or is damaged: resume from another one, or start afresh"))
        };
        if s.total_steps != plan.total_steps {
            return Err(bad(
                "totalSteps",
                format!("is {}, but these options and data make {} steps", s.total_steps, plan.total_steps),
            ));
        }
        if s.step > s.total_steps {
            return Err(bad("step", format!("is {}, beyond the run's {} steps", s.step, s.total_steps)));
        }
        if s.epoch > plan.epochs {
            return Err(bad("epoch", format!("is {}, but the run has {} epochs", s.epoch, plan.epochs)));
        }
        let micro = plan.micro_batches_per_epoch.max(1);
        if s.batch >= micro || (s.epoch == plan.epochs && s.batch != 0) {
            return Err(bad("batch", format!("is {}, but an epoch has {micro} batches", s.batch)));
        }
        let accumulation = plan.gradient_accumulation.max(1);
        let position = s.epoch as u64 * micro.div_ceil(accumulation) as u64 + s.batch.div_ceil(accumulation) as u64;
        if position != s.step {
            return Err(bad(
                "step",
                format!(
                    "is {}, but `epoch` {} and `batch` {} are the position after step {position}",
                    s.step, s.epoch, s.batch
                ),
            ));
        }
        if s.losses.len() as u64 != s.step {
            return Err(bad("losses", format!("holds {} values for {} steps", s.losses.len(), s.step)));
        }
        if let Some(i) = s.losses.iter().position(|l| !l.is_finite()) {
            return Err(bad("losses", format!("holds {} at index {i}", s.losses[i])));
        }
        if s.labels != plan.labels {
            return Err(bad("labels", format!("are {:?}, but the data has {:?}", s.labels, plan.labels)));
        }
        if let Some(best) = &s.best {
            if best.step > s.step || !best.value.is_finite() {
                return Err(bad(
                    "best",
                    format!(
                        "is step {} with value {}, not a finite value at or before step {}",
                        best.step, best.value, s.step
                    ),
                ));
            }
        }
        if s.evals_without_improvement as u64 > s.step + 1 {
            return Err(bad(
                "evalsWithoutImprovement",
                format!("is {}, more than the run's evaluations", s.evals_without_improvement),
            ));
        }
        if plan.shapes.len() != s.parameters.len() {
            return Err(bad(
                "parameters",
                format!("lists {}, the model trains {}", s.parameters.len(), plan.shapes.len()),
            ));
        }
        let trainable_path = join(dir, TRAINABLE_FILE);
        let optimizer_path = join(dir, OPTIMIZER_FILE);
        let groups = [
            (&trainable_path, "param", Some(&self.parameters), false),
            (&trainable_path, "best", self.best_parameters.as_ref(), false),
            (&optimizer_path, "m", Some(&self.optimizer.first_moments), false),
            (&optimizer_path, "v", Some(&self.optimizer.second_moments), true),
        ];
        for (path, prefix, tensors, non_negative) in groups {
            for (i, (t, shape)) in tensors.into_iter().flatten().zip(&plan.shapes).enumerate() {
                let tensor = format!("{prefix}.{i}` (`{}`)", s.parameters[i]);
                if &t.shape != shape {
                    return Err(Error::InvalidData(format!("{path}: tensor `{tensor} has shape {:?}, the model's {:?}; the checkpoint belongs to another model", t.shape, shape)));
                }
                if let Some(v) = t.data.iter().find(|v| !v.is_finite() || (non_negative && **v < 0.0)) {
                    return Err(Error::InvalidData(format!(
                        "{path}: tensor `{tensor} holds {v}; the checkpoint is damaged: resume from another one"
                    )));
                }
            }
        }
        Ok(())
    }
}
