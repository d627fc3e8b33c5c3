//! The registry of model families: which `model_type` (or a GGUF file) loads as which
//! backbone, with its tokenizer. A new family is one arm here plus its `Backbone` impl.

use std::sync::Arc;

use candle_core::Device;

use super::backbone::{Backbone, Family};
use super::bert::{BertConfig, BertModel, WEIGHT_PREFIXES};
use super::llama::{LlamaConfig, LlamaModel};
use crate::error::{Error, Result};
use crate::io::{GgufFile, ModelSource, TensorSource, Weights};
use crate::tokenizer::TextTokenizer;

/// The `model_type`s each family loads.
const ENCODER_TYPES: &[&str] = &["bert", "distilbert"];
const DECODER_TYPES: &[&str] = &["llama", "mistral", "qwen2"];

/// A loaded backbone, its tokenizer, and the weights it came from (an HF directory's, for task
/// heads such as BERT's pooler that live beside the backbone; None for GGUF).
pub struct LoadedBackbone {
    pub backbone: Box<dyn Backbone>,
    pub tokenizer: TextTokenizer,
    pub weights: Option<Weights>,
    /// The file that describes the model (`config.json` or the `.gguf`), for messages.
    pub config_path: String,
    /// Class names a merged classifier kronlora wrote (`saveMerged`) keeps in its config.
    pub labels: Vec<String>,
}

/// `id2label` of a `config.json` kronlora wrote when merging a classifier (it has a `kronlora`
/// block): the class names in index order. Other checkpoints' `id2label` is not adopted: a model
/// with string labels refuses integer ones, which would break training such a checkpoint on
/// integer-labelled data as it works today.
fn merged_classifier_labels(config: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(config) else { return Vec::new() };
    let (Some(_), Some(map)) = (v["kronlora"]["merged_adapters"].as_array(), v["id2label"].as_object()) else {
        return Vec::new();
    };
    let names: Option<Vec<String>> =
        (0..map.len()).map(|i| map.get(&i.to_string()).and_then(|n| n.as_str()).map(String::from)).collect();
    names.filter(|n| n.iter().enumerate().any(|(i, n)| *n != format!("LABEL_{i}"))).unwrap_or_default()
}

/// The `model_type` of a `config.json` (`path` for errors).
pub fn model_type_of(bytes: &[u8], path: &str) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        model_type: Option<String>,
    }
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidModel(format!("{path}: invalid JSON: {e}")))?;
    probe.model_type.ok_or_else(|| Error::InvalidModel(format!("{path}: field `model_type` is missing")))
}

/// The family that loads `model_type`, or an error listing the supported types.
pub fn family_of_model_type(model_type: &str, config_path: &str) -> Result<Family> {
    if ENCODER_TYPES.contains(&model_type) {
        Ok(Family::Encoder)
    } else if DECODER_TYPES.contains(&model_type) {
        Ok(Family::Decoder)
    } else {
        Err(Error::InvalidModel(format!(
            "{config_path}: model_type `{model_type}` is not supported; kronlora loads BERT-style encoders \
             ({}) and Llama-family decoders ({})",
            ENCODER_TYPES.join(", "),
            DECODER_TYPES.join(", ")
        )))
    }
}

/// Load the backbone and tokenizer at `source` with their weights on `device`. `quantized`: a
/// GGUF model's quantised weights stay quantised (default: yes on the CPU, the only device that
/// runs them); None elsewhere.
pub fn load_backbone(mut source: ModelSource, device: &Device, quantized: Option<bool>) -> Result<LoadedBackbone> {
    source.check()?;
    let gguf = source.gguf_name();
    if gguf.is_none() && quantized == Some(true) {
        return Err(Error::InvalidOption(format!(
            "option `quantized` applies to .gguf models; `{}` is a Hugging Face model whose weights are loaded as stored",
            source.display()
        )));
    }
    if quantized == Some(true) && !device.is_cpu() {
        return Err(Error::Unsupported(
            "quantised weights run on the CPU only; load with { quantized: false } to use a GPU".into(),
        ));
    }
    if let Some(name) = gguf {
        let file = match &source {
            ModelSource::Path(p) => GgufFile::open(p)?,
            ModelSource::Files(_) => {
                let shown = source.file_path(&name).display().to_string();
                GgufFile::from_bytes(&shown, source.take(&name)?)?
            }
        };
        let config_path = file.path().display().to_string();
        let file = Arc::new(file);
        let tokenizer = TextTokenizer::from_gguf(&file)?;
        let backbone = Box::new(LlamaModel::load_gguf(file, device, quantized.unwrap_or(device.is_cpu()))?);
        return Ok(LoadedBackbone { backbone, tokenizer, weights: None, config_path, labels: Vec::new() });
    }
    let config_path = source.file_path("config.json").display().to_string();
    let config_bytes = source.read("config.json")?;
    let tokenizer = TextTokenizer::from_bytes(&source.read("tokenizer.json")?, &source.file_path("tokenizer.json"))?;
    let model_type = model_type_of(&config_bytes, &config_path)?;
    match family_of_model_type(&model_type, &config_path)? {
        Family::Encoder => {
            let config = BertConfig::from_json(&config_bytes, &config_path)?;
            let mut weights = Weights::from_source(&mut source, device)?;
            weights.detect_prefix("embeddings.word_embeddings.weight", WEIGHT_PREFIXES);
            let backbone = Box::new(BertModel::from_weights(config, &weights)?);
            let labels = merged_classifier_labels(&config_bytes);
            Ok(LoadedBackbone { backbone, tokenizer, weights: Some(weights), config_path, labels })
        }
        Family::Decoder => {
            let config = LlamaConfig::from_json(&config_bytes, &config_path)?;
            let tokenizer_config =
                if source.exists("tokenizer_config.json") { Some(source.read("tokenizer_config.json")?) } else { None };
            let tokenizer = tokenizer.with_decoder_config(&config_bytes, tokenizer_config.as_deref());
            let weights = Weights::from_source(&mut source, device)?;
            let backbone = Box::new(LlamaModel::from_weights(config, &weights as &dyn TensorSource)?);
            Ok(LoadedBackbone { backbone, tokenizer, weights: Some(weights), config_path, labels: Vec::new() })
        }
    }
}
