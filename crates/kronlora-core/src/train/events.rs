//! What a training run tells its caller: the events it reports as it goes, why it stopped, and
//! its result. Both bindings hand these to JavaScript as JSON, so their serialised form is an
//! interface: field names and the stop reasons' strings must not change.

use serde::Serialize;

use super::task_data::EvalMetrics;

/// What a run reports as it goes (serialised with `type` as the tag for JavaScript).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum TrainEvent {
    #[serde(rename_all = "camelCase")]
    Start {
        task: String,
        total_steps: u64,
        epochs: usize,
        train_examples: usize,
        validation_examples: usize,
        trainable_parameters: usize,
        /// The adapters trained: the active ones.
        adapters: Vec<String>,
        resumed_from_step: Option<u64>,
    },
    #[serde(rename_all = "camelCase")]
    Step {
        step: u64,
        total_steps: u64,
        epoch: usize,
        loss: f64,
        learning_rate: f64,
        grad_norm: f64,
        examples_per_second: f64,
        tokens_per_second: f64,
        elapsed_seconds: f64,
    },
    #[serde(rename_all = "camelCase")]
    Eval { step: u64, epoch: usize, metrics: EvalMetrics, is_best: bool },
    #[serde(rename_all = "camelCase")]
    Checkpoint { step: u64, path: String },
    #[serde(rename_all = "camelCase")]
    Done(TrainResult),
}

impl TrainEvent {
    /// The event as the JSON both bindings hand to JavaScript.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"type\":\"error\",\"message\":\"cannot serialise an event: {e}\"}}"))
    }
}

/// Why a run ended. Serialised as the strings the TypeScript type `TrainResult.reason` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StopReason {
    /// Every epoch ran.
    #[serde(rename = "completed")]
    Completed,
    /// Early stopping's patience ran out.
    #[serde(rename = "early-stopped")]
    EarlyStopped,
    /// `maxSteps` optimiser steps were taken before the epochs ran out.
    #[serde(rename = "max-steps")]
    MaxSteps,
    /// The observer asked to stop (while the data was read, or after an optimiser step).
    #[serde(rename = "cancelled")]
    Cancelled,
}

/// The outcome of `train`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrainResult {
    pub reason: StopReason,
    pub step: u64,
    pub total_steps: u64,
    pub epoch: usize,
    /// Mean loss of the last optimiser step.
    pub train_loss: Option<f64>,
    /// Validation metrics of the weights the model holds at the end.
    pub metrics: Option<EvalMetrics>,
    pub best_step: Option<u64>,
    /// Mean training loss of every optimiser step of the run, resumed steps included.
    pub losses: Vec<f64>,
    /// The latest checkpoint written (None without `outputDir`).
    pub checkpoint: Option<String>,
    /// Where the final adapter was saved (`outputDir/adapter`).
    pub adapter_dir: Option<String>,
    pub seconds: f64,
    pub examples_per_second: f64,
}

/// Receives events and is asked, after each optimiser step, whether to stop.
pub trait TrainObserver {
    fn event(&mut self, event: &TrainEvent);
    fn should_stop(&mut self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_serialise_as_the_strings_javascript_expects() {
        for (reason, want) in [
            (StopReason::Completed, "completed"),
            (StopReason::EarlyStopped, "early-stopped"),
            (StopReason::MaxSteps, "max-steps"),
            (StopReason::Cancelled, "cancelled"),
        ] {
            assert_eq!(serde_json::to_string(&reason).unwrap(), format!("\"{want}\""));
        }
    }

    #[test]
    fn a_result_serialises_as_before() {
        let result = TrainResult {
            reason: StopReason::EarlyStopped,
            step: 6,
            total_steps: 8,
            epoch: 3,
            train_loss: Some(0.5),
            metrics: Some(EvalMetrics { loss: 0.25, accuracy: Some(1.0), perplexity: None, examples: 4 }),
            best_step: Some(2),
            losses: vec![1.0, 0.5],
            checkpoint: Some("out/checkpoint-000006".into()),
            adapter_dir: None,
            seconds: 1.5,
            examples_per_second: 2.0,
        };
        let want = concat!(
            r#"{"reason":"early-stopped","step":6,"totalSteps":8,"epoch":3,"trainLoss":0.5,"#,
            r#""metrics":{"loss":0.25,"accuracy":1.0,"examples":4},"bestStep":2,"losses":[1.0,0.5],"#,
            r#""checkpoint":"out/checkpoint-000006","adapterDir":null,"seconds":1.5,"examplesPerSecond":2.0}"#
        );
        assert_eq!(serde_json::to_string(&result).unwrap(), want);
        let done = TrainEvent::Done(result).to_json();
        assert!(done.starts_with(r#"{"type":"done","reason":"early-stopped","step":6,"#), "{done}");
    }
}
