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
use crate::io::{join, read_safetensors_bytes, safetensors_bytes, Storage};
use crate::TensorData;

pub const STATE_FILE: &str = "trainer_state.json";
const TRAINABLE_FILE: &str = "trainable.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

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

pub fn checkpoint_dir(output_dir: &str, step: u64) -> String {
    join(output_dir, &format!("checkpoint-{step:06}"))
}

/// The files of a checkpoint (`adapter_files`: the PEFT files to include).
pub fn checkpoint_files(c: &Checkpoint, adapter_files: Vec<(String, Vec<u8>)>) -> Result<Vec<(String, Vec<u8>)>> {
    let mut trainable: Vec<(String, TensorData)> = c.parameters.iter().enumerate().map(|(i, t)| (format!("param.{i}"), t.clone())).collect();
    if let Some(best) = &c.best_parameters {
        trainable.extend(best.iter().enumerate().map(|(i, t)| (format!("best.{i}"), t.clone())));
    }
    let mut moments: Vec<(String, TensorData)> = c.optimizer.first_moments.iter().enumerate().map(|(i, t)| (format!("m.{i}"), t.clone())).collect();
    moments.extend(c.optimizer.second_moments.iter().enumerate().map(|(i, t)| (format!("v.{i}"), t.clone())));
    let step = c.optimizer.step.to_string();
    let state = serde_json::to_vec_pretty(&c.state).map_err(|e| Error::InvalidState(format!("cannot serialise the trainer state: {e}")))?;
    let mut files = adapter_files;
    files.push((TRAINABLE_FILE.into(), safetensors_bytes(&trainable, &[("format", "pt")])?));
    files.push((OPTIMIZER_FILE.into(), safetensors_bytes(&moments, &[("format", "pt"), ("step", &step)])?));
    // Written last in the list; the directory appears only once all are complete anyway.
    files.push((STATE_FILE.into(), state));
    Ok(files)
}

/// `resume_from` is a checkpoint directory, or an output directory holding `checkpoint-*`
/// directories (the latest is taken).
pub fn find_checkpoint(storage: &dyn Storage, resume_from: &str) -> Result<String> {
    if storage.exists(&join(resume_from, STATE_FILE)) {
        return Ok(resume_from.to_string());
    }
    if !storage.exists(resume_from) {
        return Err(Error::InvalidOption(format!("resumeFrom: {resume_from} does not exist")));
    }
    let mut found: Vec<String> = storage
        .list(resume_from)?
        .into_iter()
        .filter(|n| n.starts_with("checkpoint-") && n[11..].chars().all(|c| c.is_ascii_digit()) && n.len() > 11)
        .filter(|n| storage.exists(&join(&join(resume_from, n), STATE_FILE)))
        .collect();
    found.sort_by_key(|n| n[11..].parse::<u64>().unwrap_or(0));
    match found.last() {
        Some(n) => Ok(join(resume_from, n)),
        None => Err(Error::InvalidOption(format!("resumeFrom: {resume_from} holds no checkpoint (no {STATE_FILE}, no checkpoint-* directory)"))),
    }
}

/// Checkpoint directories of `output_dir`, oldest first.
pub fn list_checkpoints(storage: &dyn Storage, output_dir: &str) -> Vec<String> {
    let mut found: Vec<(u64, String)> = storage
        .list(output_dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.strip_prefix("checkpoint-").and_then(|s| s.parse::<u64>().ok()).map(|s| (s, n.clone())))
        .collect();
    found.sort();
    found.into_iter().map(|(_, n)| join(output_dir, &n)).collect()
}

pub fn read_checkpoint(storage: &dyn Storage, dir: &str) -> Result<Checkpoint> {
    let state_path = join(dir, STATE_FILE);
    let state: TrainerState =
        serde_json::from_slice(&storage.read(&state_path)?).map_err(|e| Error::InvalidData(format!("{state_path}: not a kronlora trainer state: {e}")))?;
    if state.format != 1 {
        return Err(Error::InvalidData(format!("{state_path}: checkpoint format {} is not supported", state.format)));
    }
    let trainable_path = join(dir, TRAINABLE_FILE);
    let optimizer_path = join(dir, OPTIMIZER_FILE);
    let trainable = read_safetensors_bytes(&storage.read(&trainable_path)?, &trainable_path)?;
    let moments = read_safetensors_bytes(&storage.read(&optimizer_path)?, &optimizer_path)?;
    let n = state.parameters.len();
    let take = |map: &BTreeMap<String, TensorData>, prefix: &str, path: &str| -> Result<Vec<TensorData>> {
        (0..n).map(|i| map.get(&format!("{prefix}.{i}")).cloned().ok_or_else(|| Error::InvalidData(format!("{path}: tensor `{prefix}.{i}` is missing")))).collect()
    };
    let best_parameters = if trainable.contains_key("best.0") { Some(take(&trainable, "best", &trainable_path)?) } else { None };
    Ok(Checkpoint {
        parameters: take(&trainable, "param", &trainable_path)?,
        best_parameters,
        optimizer: AdamWState { step: state.step, first_moments: take(&moments, "m", &optimizer_path)?, second_moments: take(&moments, "v", &optimizer_path)? },
        state,
    })
}
