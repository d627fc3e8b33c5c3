//! Inference on a `PretrainedModel`: embeddings, classification, logits and generation.

use candle_core::{DType, Tensor, D};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::PretrainedModel;
use crate::error::{Error, Result};
use crate::models::{mean_pool, softmax_last_dim, Backbone, Family, KvCache, Task};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Classification {
    /// Index of the most likely class.
    pub label: usize,
    /// Its probability.
    pub score: f32,
    /// Probabilities of all classes (softmax of the logits).
    pub scores: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Generation {
    pub text: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Whether generation stopped at the end-of-sequence token (else at `maxTokens`).
    pub stopped_at_eos: bool,
}

fn no_texts() -> Error {
    Error::InvalidOption("texts is empty; pass at least one string".into())
}

/// Refuse outputs holding NaN or infinity (JSON would carry them as `null`): `values` are rows
/// of `width`, one per text, and `what` names them.
fn check_finite_rows(values: &[f32], width: usize, what: &str) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::NonFinite(format!(
            "the {what} of text {} hold {} (at {}); the model or adapter files are probably corrupt, or an adapter's weights diverged",
            i / width.max(1),
            values[i],
            i % width.max(1)
        ))),
    }
}

impl PretrainedModel {
    fn tokenize(&self, text: &str, index: usize, max_len: usize) -> Result<Vec<u32>> {
        let mut ids = self.tokenizer.encode(text)?;
        if ids.is_empty() {
            return Err(Error::InvalidOption(format!("text {index} tokenizes to nothing; pass non-empty text")));
        }
        // Inference truncates to what the model can attend to, as transformers' pipelines do.
        ids.truncate(max_len);
        Ok(ids)
    }

    /// Token ids and attention mask of `texts`, right-padded to the longest: `[n, t]` each.
    fn encoder_batch(&self, encoder: &dyn Backbone, texts: &[String]) -> Result<(Tensor, Tensor)> {
        if texts.is_empty() {
            return Err(no_texts());
        }
        let encoded = texts
            .iter()
            .enumerate()
            .map(|(i, t)| self.tokenize(t, i, encoder.context_length()))
            .collect::<Result<Vec<_>>>()?;
        let t = encoded.iter().map(Vec::len).max().unwrap_or(1);
        let pad = self.tokenizer.pad_token_id;
        let ids: Vec<u32> =
            encoded.iter().flat_map(|e| e.iter().copied().chain(std::iter::repeat(pad)).take(t)).collect();
        let mask: Vec<f32> =
            encoded.iter().flat_map(|e| (0..t).map(move |j| if j < e.len() { 1.0 } else { 0.0 })).collect();
        let device = encoder.device();
        Ok((Tensor::from_vec(ids, (texts.len(), t), device)?, Tensor::from_vec(mask, (texts.len(), t), device)?))
    }

    fn encoder(&self, what: &str) -> Result<&dyn Backbone> {
        match self.backbone.family() {
            Family::Encoder => Ok(self.backbone.as_ref()),
            Family::Decoder => {
                Err(Error::Unsupported(format!("{what} need an encoder model (BERT family); this is a causal LM")))
            }
        }
    }

    /// Mean-pooled embeddings, `texts.len() × hidden` row-major, and `hidden`.
    pub fn embed(&self, texts: &[String]) -> Result<(Vec<f32>, usize)> {
        crate::compute_pool::no_grad_on(self.device(), || self.embed_body(texts))
    }

    fn embed_body(&self, texts: &[String]) -> Result<(Vec<f32>, usize)> {
        let encoder = self.encoder("sentence embeddings")?;
        let (ids, mask) = self.encoder_batch(encoder, texts)?;
        let pooled: Vec<f32> =
            mean_pool(&encoder.forward(&ids, Some(&mask), None)?, &mask)?.flatten_all()?.to_vec1()?;
        check_finite_rows(&pooled, encoder.hidden_size(), "embeddings")?;
        Ok((pooled, encoder.hidden_size()))
    }

    fn class_logits(&self, texts: &[String]) -> Result<Tensor> {
        let encoder = self.encoder("class scores")?;
        let head = self.head.as_ref().ok_or_else(|| {
            Error::Unsupported(
                "this model has no classification head; load it with task \"sequence-classification\"".into(),
            )
        })?;
        let (ids, mask) = self.encoder_batch(encoder, texts)?;
        head.forward(&encoder.forward(&ids, Some(&mask), None)?)
    }

    pub fn classify(&self, texts: &[String]) -> Result<Vec<Classification>> {
        crate::compute_pool::no_grad_on(self.device(), || self.classify_body(texts))
    }

    fn classify_body(&self, texts: &[String]) -> Result<Vec<Classification>> {
        // The softmax of a row with NaN or infinity holds NaN: checking the probabilities checks
        // the logits, with one copy to the host ([texts, classes], small).
        let probs = softmax_last_dim(&self.class_logits(texts)?)?.to_vec2::<f32>()?;
        check_finite_rows(&probs.concat(), probs.first().map_or(1, Vec::len), "class scores")?;
        Ok(probs
            .into_iter()
            .map(|scores| {
                let (label, score) =
                    scores
                        .iter()
                        .copied()
                        .enumerate()
                        .fold((0, f32::MIN), |b, (i, s)| if s > b.1 { (i, s) } else { b });
                Classification { label, score, scores }
            })
            .collect())
    }

    /// Classification: class logits. Causal LM: the next-token logits after each text.
    /// Returns `texts.len() × width` row-major, and `width`.
    pub fn logits(&self, texts: &[String]) -> Result<(Vec<f32>, usize)> {
        crate::compute_pool::no_grad_on(self.device(), || self.logits_body(texts))
    }

    fn logits_body(&self, texts: &[String]) -> Result<(Vec<f32>, usize)> {
        let m = self.backbone.as_ref();
        match (m.family(), self.task) {
            (Family::Decoder, _) => {
                if texts.is_empty() {
                    return Err(no_texts());
                }
                let vocab = m.vocab_size();
                let mut out = Vec::with_capacity(texts.len() * vocab);
                for (i, text) in texts.iter().enumerate() {
                    let ids = self.tokenize(text, i, m.context_length())?;
                    let t = ids.len();
                    let logits = m.forward(&Tensor::from_vec(ids, (1, t), m.device())?, None, None)?;
                    out.extend(logits.get(0)?.get(t - 1)?.to_vec1::<f32>()?);
                }
                check_finite_rows(&out, vocab, "next-token logits")?;
                Ok((out, vocab))
            }
            (Family::Encoder, Task::SequenceClassification) => {
                let logits = self.class_logits(texts)?;
                let width = logits.dim(1)?;
                let values: Vec<f32> = logits.flatten_all()?.to_vec1()?;
                check_finite_rows(&values, width, "class logits")?;
                Ok((values, width))
            }
            (Family::Encoder, _) => Err(Error::Unsupported(
                "logits of an encoder need task \"sequence-classification\"; for sentence vectors use embeddings"
                    .into(),
            )),
        }
    }

    /// Continue `prompt` token by token (with a KV cache), greedy or sampled.
    pub fn generate(&self, prompt: &str, options: &GenerateOptions) -> Result<Generation> {
        crate::compute_pool::no_grad_on(self.device(), || self.generate_body(prompt, options))
    }

    fn generate_body(&self, prompt: &str, options: &GenerateOptions) -> Result<Generation> {
        let m = self.backbone.as_ref();
        if m.family() != Family::Decoder {
            return Err(Error::Unsupported("generation needs a causal LM (Llama family); this is an encoder".into()));
        }
        if !(options.temperature.is_finite() && options.temperature >= 0.0) {
            return Err(Error::InvalidOption(format!(
                "temperature must be a finite number ≥ 0, got {}",
                options.temperature
            )));
        }
        let prompt_ids = self.tokenize(prompt, 0, m.context_length())?;
        let room = m.context_length() - prompt_ids.len();
        let max_tokens = options.max_tokens.min(room);
        let mut rng = StdRng::seed_from_u64(options.seed);
        let mut cache = KvCache::default();
        let mut next_input = prompt_ids.clone();
        let mut generated = Vec::new();
        let mut stopped_at_eos = false;
        while generated.len() < max_tokens {
            let t = next_input.len();
            let logits = m.forward(
                &Tensor::from_vec(std::mem::take(&mut next_input), (1, t), m.device())?,
                None,
                Some(&mut cache),
            )?;
            let last = logits.get(0)?.get(t - 1)?;
            // One scalar per step on the hot path; the row is read only when it is not finite.
            if !last.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?.is_finite() {
                check_finite_rows(&last.to_dtype(DType::F32)?.to_vec1::<f32>()?, m.vocab_size(), "next-token logits")
                    .map_err(|e| Error::NonFinite(format!("generation: {e} at step {}", generated.len())))?;
            }
            let token = if options.temperature == 0.0 {
                last.argmax(D::Minus1)?.to_scalar::<u32>()?
            } else {
                let probs = softmax_last_dim(&(last.to_dtype(DType::F32)? / options.temperature)?)?.to_vec1::<f32>()?;
                let mut u: f32 = rng.random();
                let mut chosen = probs.len() - 1;
                for (i, p) in probs.iter().enumerate() {
                    if u < *p {
                        chosen = i;
                        break;
                    }
                    u -= p;
                }
                chosen as u32
            };
            if Some(token) == self.tokenizer.eos_token_id {
                stopped_at_eos = true;
                break;
            }
            generated.push(token);
            next_input.push(token);
        }
        Ok(Generation {
            text: self.tokenizer.decode(&generated)?,
            prompt_tokens: prompt_ids.len(),
            generated_tokens: generated.len(),
            stopped_at_eos,
        })
    }
}
