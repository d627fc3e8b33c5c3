//! A tokenised dataset of one task, and what training and evaluation need from it: the
//! loss of a micro-batch (a differentiable scalar) and the metrics of a whole set.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::options::{DataSpec, TrainTask};
use super::{cross_entropy, target_log_probs};
use crate::data::{
    classification_batch, encode_choice_record, encode_lm_record, lm_batch, parse_placed_records,
    placed_records_from_json, ChoiceExample, EncodedExample, LabelMap, LabelSummary, LmBatch, LmExample, Record,
    RecordTask,
};
use crate::error::{Error, Result};
use crate::io::{read_text, Storage};
use crate::models::Family;
use crate::pretrained::PretrainedModel;

/// Metrics of an evaluation; `accuracy` for classification and multiple choice, `perplexity`
/// (e^loss per scored token) for causal LM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<f64>,
    pub examples: usize,
}

impl EvalMetrics {
    pub fn get(&self, metric: super::Metric) -> Option<f64> {
        match metric {
            super::Metric::Loss => Some(self.loss),
            super::Metric::Accuracy => self.accuracy,
            super::Metric::Perplexity => self.perplexity,
        }
    }
}

pub enum TaskData {
    Classification(Vec<EncodedExample>),
    CausalLm(Vec<LmExample>),
    MultipleChoice(Vec<ChoiceExample>),
}

/// The loss of one micro-batch and what it covered.
pub struct BatchLoss {
    pub loss: Tensor,
    pub tokens: usize,
}

/// Records placed by where they came from (`train.jsonl:12`), for errors.
pub type Placed = Vec<(Record, String)>;

/// Read records of `task` from `spec`.
pub fn read_records(spec: &DataSpec, task: TrainTask, storage: &dyn Storage, what: &str) -> Result<Placed> {
    let (text, name): (std::borrow::Cow<str>, &str) = match spec {
        DataSpec::Path(p) => {
            if !storage.exists(p) {
                return Err(Error::InvalidData(format!("{p}: the {what} file does not exist")));
            }
            (read_text(storage, p)?.into(), p)
        }
        DataSpec::Text { name, text } => (text.as_str().into(), name),
        // Records given in memory are already parsed: no round trip through text.
        DataSpec::Records(v) => return placed_records_from_json(record_task(task), v, what),
    };
    parse_file_text(task, &text, name)
}

fn record_task(task: TrainTask) -> RecordTask {
    match task {
        TrainTask::Classification => RecordTask::Classification,
        TrainTask::CausalLm => RecordTask::CausalLm,
        TrainTask::MultipleChoice => RecordTask::MultipleChoice,
    }
}

/// A file's records: JSONL, or a JSON array when a `.json` file starts with `[`.
fn parse_file_text(task: TrainTask, text: &str, name: &str) -> Result<Placed> {
    let jsonl = !(name.ends_with(".json") && text.trim_start().starts_with('['));
    parse_placed_records(record_task(task), text, name, jsonl)
}

/// The labels of a classification file's contents (`name` for errors): what a caller needs to
/// size a classification head before loading the model.
pub fn label_summary(text: &str, name: &str) -> Result<LabelSummary> {
    let records = parse_file_text(TrainTask::Classification, text, name)?;
    Ok(LabelSummary::of(records.iter().filter_map(|(r, _)| match r {
        Record::Classification { label, .. } => Some(label),
        _ => None,
    })))
}

/// `label_summary` as JSON `{ records, labels, numLabels }`.
pub fn label_summary_json(text: &str, name: &str) -> Result<String> {
    serde_json::to_string(&label_summary(text, name)?)
        .map_err(|e| Error::InvalidState(format!("cannot serialise the summary: {e}")))
}

/// The task a model trains by default.
pub fn default_task(model: &PretrainedModel) -> TrainTask {
    match model.task {
        crate::pretrained::Task::SequenceClassification => TrainTask::Classification,
        _ => TrainTask::CausalLm,
    }
}

/// Check that `task` fits `model`.
pub fn check_task(model: &PretrainedModel, task: TrainTask) -> Result<()> {
    match (task, model.backbone.family(), &model.head) {
        (TrainTask::Classification, Family::Encoder, Some(_)) => Ok(()),
        (TrainTask::Classification, _, _) => Err(Error::Unsupported(
            "classification needs an encoder loaded with task \"sequence-classification\"".into(),
        )),
        (TrainTask::CausalLm | TrainTask::MultipleChoice, Family::Decoder, _) => Ok(()),
        (t, _, _) => Err(Error::Unsupported(format!(
            "task \"{}\" needs a causal LM (Llama family); this is an encoder",
            t.name()
        ))),
    }
}

/// The default `maxLength`.
pub const DEFAULT_MAX_LENGTH: usize = 128;

/// `encode_one` over `records` in order, asking `should_stop` before each (a chat template may
/// take a while per record); `None` when it said stop.
fn encode_each<T>(
    records: &[&Record],
    should_stop: &mut dyn FnMut() -> bool,
    mut encode_one: impl FnMut(usize, &Record) -> Result<T>,
) -> Result<Option<Vec<T>>> {
    let mut out = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        if should_stop() {
            return Ok(None);
        }
        out.push(encode_one(i, r)?);
    }
    Ok(Some(out))
}

/// Tokenise `records`. Classification labels go through `labels` (`fit`: the training set
/// decides the label names; otherwise unknown labels are errors). `should_stop` is asked
/// before each record (rendering a chat template and tokenising can take a while on large
/// data, and a cancelled run should not wait for it); `None` when it said stop.
#[allow(clippy::too_many_arguments)]
pub fn encode(
    model: &PretrainedModel,
    task: TrainTask,
    placed: &[(Record, String)],
    max_length: Option<usize>,
    labels: &mut LabelMap,
    fit: bool,
    source: &str,
    should_stop: &mut dyn FnMut() -> bool,
) -> Result<Option<TaskData>> {
    let tokenizer = &model.tokenizer;
    let max_length = max_length.unwrap_or(DEFAULT_MAX_LENGTH.min(model.context_length()));
    // Checked here, before any work: a longer batch would fail only when it came up.
    if max_length > model.context_length() {
        return Err(Error::InvalidOption(format!(
            "maxLength = {max_length} exceeds the model's context of {} positions; use at most {}",
            model.context_length(),
            model.context_length()
        )));
    }
    let at = |i: usize| placed[i].1.clone();
    let records: Vec<&Record> = placed.iter().map(|(r, _)| r).collect();
    match task {
        TrainTask::Classification => {
            let num_labels = model.head.as_ref().map_or(0, |h| h.num_labels());
            if fit {
                let found = LabelMap::from_labels(
                    placed.iter().filter_map(|(r, at)| match r {
                        Record::Classification { label, .. } => Some((label, at.as_str())),
                        _ => None,
                    }),
                    num_labels,
                )?;
                if labels.names.is_empty()
                    || !found.names.is_empty() && found.names.iter().any(|n| !labels.names.contains(n))
                {
                    if !labels.names.is_empty() && !found.names.is_empty() {
                        return Err(Error::InvalidData(format!(
                            "{source}: labels {} differ from the adapter's labels {}",
                            found.names.join(", "),
                            labels.names.join(", ")
                        )));
                    }
                    *labels = found;
                }
            }
            let encoded = encode_each(&records, should_stop, |i, r| {
                let Record::Classification { text, label } = r else { unreachable!("parsed as classification") };
                let label =
                    labels.index(label, num_labels).map_err(|e| Error::InvalidData(format!("{}: {e}", at(i))))?;
                let mut ids = tokenizer.encode(text)?;
                if ids.is_empty() {
                    return Err(Error::InvalidData(format!("{}: the text tokenizes to nothing", at(i))));
                }
                ids.truncate(max_length);
                Ok(EncodedExample { ids, label: label as u32 })
            })?;
            Ok(encoded.map(TaskData::Classification))
        }
        TrainTask::CausalLm => {
            Ok(encode_each(&records, should_stop, |i, r| encode_lm_record(tokenizer, r, max_length, &at(i)))?
                .map(TaskData::CausalLm))
        }
        TrainTask::MultipleChoice => {
            Ok(encode_each(&records, should_stop, |i, r| encode_choice_record(tokenizer, r, max_length, &at(i)))?
                .map(TaskData::MultipleChoice))
        }
    }
}

/// Sum of log-probabilities of the scored tokens of each row, and their mean loss: `[b]`, scalar.
fn lm_log_likelihood(model: &PretrainedModel, batch: &LmBatch) -> Result<(Tensor, Tensor)> {
    let logits = model.backbone.forward(&batch.ids, None, None)?;
    let (b, t) = batch.ids.dims2()?;
    // The last position predicts nothing: it gets target 0, and its log-probability is dropped.
    // Reading every position keeps the logits as the head wrote them (a narrowed copy would
    // keep both alive through backward: each is vocabulary × tokens in size).
    let last = Tensor::zeros((b, 1), DType::U32, logits.device())?;
    let targets = Tensor::cat(&[&batch.targets, &last], 1)?;
    let picked = target_log_probs(&logits, &targets)?.narrow(1, 0, t - 1)?;
    let weighted = (picked * &batch.weights)?;
    let per_row = weighted.sum(1)?;
    let loss = (per_row.sum_all()?.neg()? / batch.scored.max(1) as f64)?;
    Ok((per_row, loss))
}

impl TaskData {
    pub fn len(&self) -> usize {
        match self {
            TaskData::Classification(x) => x.len(),
            TaskData::CausalLm(x) => x.len(),
            TaskData::MultipleChoice(x) => x.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sequence lengths, for length-bucketed batching.
    pub fn lengths(&self) -> Vec<usize> {
        match self {
            TaskData::Classification(x) => x.iter().map(|e| e.ids.len()).collect(),
            TaskData::CausalLm(x) => x.iter().map(|e| e.ids.len()).collect(),
            TaskData::MultipleChoice(x) => x.iter().map(|e| e.choices[e.answer].ids.len()).collect(),
        }
    }

    /// A fingerprint of the tokenised data, so a resumed run can check it sees the same data.
    pub fn fingerprint(&self) -> String {
        let mut hash = crate::hash::Fnv1a::default();
        let mut eat = |x: u64| hash.word(x);
        match self {
            TaskData::Classification(x) => {
                x.iter().for_each(|e| e.ids.iter().chain([&e.label]).for_each(|&v| eat(v as u64)))
            }
            TaskData::CausalLm(x) => x.iter().for_each(|e| e.ids.iter().for_each(|&v| eat(v as u64))),
            TaskData::MultipleChoice(x) => {
                x.iter().for_each(|e| e.choices.iter().flat_map(|c| &c.ids).for_each(|&v| eat(v as u64)))
            }
        }
        format!("{}:{:016x}", self.len(), hash.finish())
    }

    /// The training loss of the examples `indices` (mean over examples or scored tokens).
    pub fn loss(&self, model: &PretrainedModel, indices: &[usize]) -> Result<BatchLoss> {
        // Batches go where the model's weights are.
        let device = model.device();
        match self {
            TaskData::Classification(x) => {
                let batch = classification_batch(x, indices, model.tokenizer.pad_token_id, device)?;
                let logits = model.classification_logits(&batch.ids, &batch.mask)?;
                Ok(BatchLoss { loss: cross_entropy(&logits, &batch.labels)?, tokens: batch.tokens })
            }
            TaskData::CausalLm(x) => {
                let batch = lm_batch(
                    &indices.iter().map(|&i| &x[i]).collect::<Vec<_>>(),
                    model.tokenizer.pad_token_id,
                    device,
                )?;
                Ok(BatchLoss { loss: lm_log_likelihood(model, &batch)?.1, tokens: batch.tokens })
            }
            // Multiple choice trains the model to write the right answer after the question.
            TaskData::MultipleChoice(x) => {
                let batch = lm_batch(
                    &indices.iter().map(|&i| &x[i].choices[x[i].answer]).collect::<Vec<_>>(),
                    model.tokenizer.pad_token_id,
                    device,
                )?;
                Ok(BatchLoss { loss: lm_log_likelihood(model, &batch)?.1, tokens: batch.tokens })
            }
        }
    }

    /// Loss and the task's metric over the whole set, without gradients or dropout.
    pub fn evaluate(&self, model: &PretrainedModel, batch_size: usize) -> Result<EvalMetrics> {
        let device = model.device();
        let n = self.len();
        if n == 0 {
            return Err(Error::InvalidData("the evaluation set is empty".into()));
        }
        let order: Vec<usize> = (0..n).collect();
        match self {
            TaskData::Classification(x) => {
                let (mut loss, mut correct) = (0f64, 0usize);
                for indices in order.chunks(batch_size.max(1)) {
                    let batch = classification_batch(x, indices, model.tokenizer.pad_token_id, device)?;
                    let logits = model.classification_logits(&batch.ids, &batch.mask)?.detach();
                    loss += cross_entropy(&logits, &batch.labels)?.to_scalar::<f32>()? as f64 * indices.len() as f64;
                    let predicted = logits.argmax(1)?.to_vec1::<u32>()?;
                    correct += predicted.iter().zip(batch.labels.to_vec1::<u32>()?).filter(|(p, l)| **p == *l).count();
                }
                Ok(EvalMetrics {
                    loss: loss / n as f64,
                    accuracy: Some(correct as f64 / n as f64),
                    perplexity: None,
                    examples: n,
                })
            }
            TaskData::CausalLm(x) => {
                let (mut total, mut scored) = (0f64, 0usize);
                for indices in order.chunks(batch_size.max(1)) {
                    let batch = lm_batch(
                        &indices.iter().map(|&i| &x[i]).collect::<Vec<_>>(),
                        model.tokenizer.pad_token_id,
                        device,
                    )?;
                    let (per_row, _) = lm_log_likelihood(model, &batch)?;
                    total -= per_row.detach().to_dtype(candle_core::DType::F64)?.sum_all()?.to_scalar::<f64>()?;
                    scored += batch.scored;
                }
                let loss = total / scored.max(1) as f64;
                Ok(EvalMetrics { loss, accuracy: None, perplexity: Some(loss.exp()), examples: n })
            }
            TaskData::MultipleChoice(x) => {
                // Every choice of every question, scored by its summed log-likelihood.
                let flat: Vec<(usize, &LmExample)> =
                    x.iter().enumerate().flat_map(|(q, e)| e.choices.iter().map(move |c| (q, c))).collect();
                let mut scores: Vec<Vec<f64>> = x.iter().map(|e| Vec::with_capacity(e.choices.len())).collect();
                for chunk in flat.chunks(batch_size.max(1)) {
                    let batch = lm_batch(
                        &chunk.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
                        model.tokenizer.pad_token_id,
                        device,
                    )?;
                    let (per_row, _) = lm_log_likelihood(model, &batch)?;
                    for ((q, _), s) in chunk.iter().zip(per_row.detach().to_vec1::<f32>()?) {
                        scores[*q].push(s as f64);
                    }
                }
                let (mut loss, mut correct) = (0f64, 0usize);
                for (e, s) in x.iter().zip(&scores) {
                    let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let log_z = max + s.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                    loss += log_z - s[e.answer];
                    let best = s.iter().enumerate().fold(0, |b, (i, v)| if *v > s[b] { i } else { b });
                    correct += usize::from(best == e.answer);
                }
                Ok(EvalMetrics {
                    loss: loss / n as f64,
                    accuracy: Some(correct as f64 / n as f64),
                    perplexity: None,
                    examples: n,
                })
            }
        }
    }
}
