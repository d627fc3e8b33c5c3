//! Checkpoints (trainer_state.json, trainable.safetensors, optimizer.safetensors) written by a
//! real run on the tiny BERT and cancelled after one step, mutated, through `read_checkpoint`
//! and a resumed `train`.

use crate::json_api::train;
use kronlora_core::api;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use kronlora_core::pretrained::PretrainedModel;
use kronlora_core::train::{read_checkpoint, trainable_named, StopReason, TrainEvent, TrainObserver};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::memory_storage::MemoryStorage;
use super::mutate::{
    apply_json, apply_safetensors, extreme_integer, json_mutation, safetensors_mutation, JsonMutation,
    SafetensorsMutation,
};
use super::tiny_files::bert_classifier;
use super::{finite, fuzz, CaseResult, Property};

const ADAPTER: &str = r#"{"type":"kron-lora","rank":2,"alpha":4,"targetModules":["query","value"]}"#;
const CHECKPOINT: &str = "out/checkpoint-000001";

fn options(resume: bool) -> String {
    let records: Vec<Value> =
        (0..8).map(|i| json!({ "text": format!("w{} w{}", 4 + i, 20 + i), "label": i % 2 })).collect();
    let mut o = json!({ "data": records, "validationSplit": 0, "epochs": 2, "batchSize": 4, "checkpointEvery": 1, "outputDir": "out", "seed": 1 });
    if resume {
        o["resumeFrom"] = json!("out");
    }
    o.to_string()
}

fn model() -> PretrainedModel {
    let mut m = bert_classifier();
    api::add_adapter(&mut m, "default", ADAPTER).unwrap();
    m
}

struct StopAfterFirstStep(bool);
impl TrainObserver for StopAfterFirstStep {
    fn event(&mut self, e: &TrainEvent) {
        self.0 |= matches!(e, TrainEvent::Step { .. });
    }
    fn should_stop(&mut self) -> bool {
        self.0
    }
}

struct Quiet;
impl TrainObserver for Quiet {
    fn event(&mut self, _: &TrainEvent) {}
}

/// Every file of the output directory after one step (the checkpoint included).
fn written() -> &'static BTreeMap<String, Vec<u8>> {
    static FILES: OnceLock<BTreeMap<String, Vec<u8>>> = OnceLock::new();
    FILES.get_or_init(|| {
        let storage = MemoryStorage::default();
        let result = train(&mut model(), &options(false), &storage, &mut StopAfterFirstStep(false)).unwrap();
        assert_eq!((result.reason, result.checkpoint.as_deref()), (StopReason::Cancelled, Some(CHECKPOINT)));
        storage.files()
    })
}

#[derive(Debug, Clone)]
pub enum CheckpointMutation {
    State(JsonMutation),
    /// A counter of the state set to an extreme (a crafted state, still well-typed).
    StateCounter(&'static str, u64),
    Trainable(SafetensorsMutation),
    Optimizer(SafetensorsMutation),
}

fn checkpoint_case(mutations: &Vec<CheckpointMutation>) -> CaseResult {
    let mut files = written().clone();
    for m in mutations {
        let file = match m {
            CheckpointMutation::State(_) | CheckpointMutation::StateCounter(..) => "trainer_state.json",
            CheckpointMutation::Trainable(_) => "trainable.safetensors",
            CheckpointMutation::Optimizer(_) => "optimizer.safetensors",
        };
        let bytes = files.get_mut(&format!("{CHECKPOINT}/{file}")).unwrap();
        match m {
            CheckpointMutation::State(j) => *bytes = apply_json(bytes, j),
            CheckpointMutation::StateCounter(field, value) => {
                let mut state: Value = serde_json::from_slice(bytes).unwrap_or_default();
                if state.get(*field).is_some() {
                    state[*field] = json!(value);
                }
                *bytes = serde_json::to_vec(&state).unwrap();
            }
            CheckpointMutation::Trainable(s) | CheckpointMutation::Optimizer(s) => apply_safetensors(bytes, s),
        }
    }
    let storage = MemoryStorage::new(files);
    let mut problems = Vec::new();
    if let Ok(c) = read_checkpoint(&storage, CHECKPOINT) {
        for t in c.parameters.iter().chain(c.optimizer.first_moments.iter()).chain(c.optimizer.second_moments.iter()) {
            problems.extend(finite("a checkpoint tensor read back", &t.data));
        }
    }
    let mut m = model();
    let result = train(&mut m, &options(true), &storage, &mut Quiet)?;
    // The run this checkpoint came from takes 4 steps: resumed, it completes them all, and its
    // loss history has one loss per step.
    if result.reason == StopReason::Completed
        && (result.step != result.total_steps || result.losses.len() as u64 != result.step)
    {
        problems.push((
            Property::Consistent,
            format!(
                "resumed run completed at step {} of {} with {} losses",
                result.step,
                result.total_steps,
                result.losses.len()
            ),
        ));
    }
    problems.extend(finite("losses", &result.losses.iter().map(|v| *v as f32).collect::<Vec<_>>()));
    for (name, var) in trainable_named(&m) {
        problems.extend(finite(&name, &var.as_tensor().flatten_all()?.to_vec1::<f32>()?));
    }
    Ok(problems)
}

#[test]
fn checkpoint() {
    let mutation = prop_oneof![
        3 => json_mutation().prop_map(CheckpointMutation::State),
        2 => (proptest::sample::select(vec!["step", "totalSteps", "epoch", "batch", "evalsWithoutImprovement", "format"]), extreme_integer())
            .prop_map(|(field, value)| CheckpointMutation::StateCounter(field, value)),
        1 => safetensors_mutation().prop_map(CheckpointMutation::Trainable),
        1 => safetensors_mutation().prop_map(CheckpointMutation::Optimizer),
    ];
    fuzz("checkpoint", file!(), 96, proptest::collection::vec(mutation, 1..3), checkpoint_case);
}
