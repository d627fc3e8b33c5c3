//! Sequence-classification heads on the first token: BERT's pooler (dense + tanh) or
//! DistilBERT's pre-classifier (dense + ReLU), then the classifier; both trainable as whole
//! modules (PEFT's `modules_to_save`).

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::grad_mode::param;
use crate::io::TensorSource;
use crate::limits::MAX_HEAD_PARAMETERS;

/// Which transformers head: names of the first dense layer and its activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadStyle {
    /// `pooler.dense` + tanh (BertForSequenceClassification).
    BertPooler,
    /// `pre_classifier` + ReLU (DistilBertForSequenceClassification).
    DistilBert,
}

impl HeadStyle {
    fn dense_name(self) -> &'static str {
        match self {
            HeadStyle::BertPooler => "pooler.dense",
            HeadStyle::DistilBert => "pre_classifier",
        }
    }
}

pub struct ClassificationHead {
    style: HeadStyle,
    pooler_weight: Var,
    pooler_bias: Var,
    classifier_weight: Var,
    classifier_bias: Var,
}

/// `N(0, std²)` by Box–Muller from a seeded StdRng (the same numbers on every backend).
fn normal(rng: &mut StdRng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f32 = rng.random_range(f32::EPSILON..1.0);
            let u2: f32 = rng.random();
            std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect()
}

impl ClassificationHead {
    /// Pooler from the checkpoint when it has one; classifier from the checkpoint when its
    /// shape fits `num_labels`, else initialised as transformers does (N(0, 0.02²), zero bias).
    pub fn new(
        w: &dyn TensorSource,
        style: HeadStyle,
        hidden: usize,
        num_labels: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        // Estimated before anything is allocated: an allocation that fails aborts the process.
        // Checked products: on wasm32 a hidden size of 2^16 squared already overflows usize.
        let parameters = num_labels
            .checked_mul(hidden)
            .and_then(|c| c.checked_add(hidden.checked_mul(hidden)?))
            .unwrap_or(usize::MAX);
        if parameters > MAX_HEAD_PARAMETERS {
            return Err(Error::InvalidOption(format!(
                "option `numLabels` = {num_labels} on a model of hidden size {hidden} needs a classification head of {parameters} parameters; \
                 the maximum is {MAX_HEAD_PARAMETERS} ({} GiB of f32): use fewer labels",
                (MAX_HEAD_PARAMETERS * 4) >> 30
            )));
        }
        let dense = style.dense_name();
        let (dense_w, dense_b) = (format!("{dense}.weight"), format!("{dense}.bias"));
        let mut rng = StdRng::seed_from_u64(seed);
        let mut init = |shape: &[usize]| -> Result<Tensor> {
            Ok(Tensor::from_vec(normal(&mut rng, shape.iter().product(), 0.02), shape, device)?)
        };
        let pooler_weight =
            if w.contains(&dense_w) { w.get(&dense_w, &[hidden, hidden])? } else { init(&[hidden, hidden])? };
        let pooler_bias =
            if w.contains(&dense_b) { w.get(&dense_b, &[hidden])? } else { Tensor::zeros(hidden, DType::F32, device)? };
        // A checkpoint's own classifier is reused only when it has this many labels.
        let (classifier_weight, classifier_bias) =
            match (w.get("classifier.weight", &[num_labels, hidden]), w.get("classifier.bias", &[num_labels])) {
                (Ok(weight), Ok(bias)) => (weight, bias),
                _ => (init(&[num_labels, hidden])?, Tensor::zeros(num_labels, DType::F32, device)?),
            };
        Ok(ClassificationHead {
            style,
            pooler_weight: Var::from_tensor(&pooler_weight)?,
            pooler_bias: Var::from_tensor(&pooler_bias)?,
            classifier_weight: Var::from_tensor(&classifier_weight)?,
            classifier_bias: Var::from_tensor(&classifier_bias)?,
        })
    }

    pub fn num_labels(&self) -> usize {
        self.classifier_bias.dim(0).unwrap_or(0)
    }

    /// Class logits `[batch, labels]` from hidden states `[batch, seq, hidden]`.
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        let dense = first.matmul(&param(&self.pooler_weight).t()?)?.broadcast_add(&param(&self.pooler_bias))?;
        let pooled = match self.style {
            HeadStyle::BertPooler => dense.tanh()?,
            HeadStyle::DistilBert => dense.relu()?,
        };
        Ok(pooled.matmul(&param(&self.classifier_weight).t()?)?.broadcast_add(&param(&self.classifier_bias))?)
    }

    /// PEFT's `modules_to_save` names for this head.
    pub fn module_names(&self) -> Vec<&'static str> {
        match self.style {
            HeadStyle::BertPooler => vec!["pooler", "classifier"],
            HeadStyle::DistilBert => vec!["pre_classifier", "classifier"],
        }
    }

    /// Trainable parameters under their transformers names.
    pub fn parameters(&self) -> Vec<(&'static str, &Var)> {
        let (weight, bias) = match self.style {
            HeadStyle::BertPooler => ("pooler.dense.weight", "pooler.dense.bias"),
            HeadStyle::DistilBert => ("pre_classifier.weight", "pre_classifier.bias"),
        };
        vec![
            (weight, &self.pooler_weight),
            (bias, &self.pooler_bias),
            ("classifier.weight", &self.classifier_weight),
            ("classifier.bias", &self.classifier_bias),
        ]
    }
}
