//! Options JSON: a standalone layer's (`LayerOptions::from_json`, then the layer is built and
//! run when it is small), an adapter's (`add_adapter` on the tiny BERT classifier, then class
//! logits) and `loadModel`'s (`api::model_options`).

use candle_core::{Device, Tensor};
use kronlora_core::api;
use kronlora_core::{AdaptedLinear, AdapterKind};
use proptest::prelude::*;

use super::mutate::{apply_json, json_mutation, JsonMutation};
use super::tiny_files::bert_classifier;
use super::{finite, fuzz, CaseResult};

const VALID: [&str; 5] = [
    r#"{"inFeatures":16,"outFeatures":8,"rank":2,"alpha":4,"kronIn":2,"kronOut":2,"seed":1,"useRslora":false,"name":"layer"}"#,
    r#"{"inFeatures":12,"outFeatures":6,"rank":3,"alpha":6,"seed":2,"useRslora":true,"name":"layer"}"#,
    r#"{"type":"kron-lora","rank":4,"alpha":8,"kronIn":2,"kronOut":4,"targetModules":"all-linear","rankPattern":{"query":2},"alphaPattern":{"value":3},"kronInPattern":{"key":4},"dropout":0.1,"seed":3,"useRslora":true}"#,
    r#"{"type":"lora","rank":4,"alpha":8,"targetModules":["query","value","dense"],"rankPattern":{"dense":2},"seed":3}"#,
    r#"{"task":"sequence-classification","numLabels":3,"seed":2}"#,
];

#[derive(Debug, Clone)]
pub struct OptionsCase {
    which: usize,
    mutations: Vec<JsonMutation>,
}

/// Layers up to this many parameters are built and run; the parser's own bound is 2^31
/// adapter parameters, and allocating that much is what issue 9 §2 asks to bound better.
const BUILD_AT_MOST: usize = 1 << 20;

fn options_case(case: &OptionsCase) -> CaseResult {
    let json = case.mutations.iter().fold(VALID[case.which].as_bytes().to_vec(), |text, m| apply_json(&text, m));
    let Ok(json) = String::from_utf8(json) else { return Ok(Vec::new()) }; // JavaScript strings are UTF-8.
    match case.which {
        0 | 1 => {
            let kind = if case.which == 0 { AdapterKind::KronLora } else { AdapterKind::Lora };
            let (o, device) = api::layer_options(kind, &json)?;
            let size = o
                .in_features
                .saturating_mul(o.out_features)
                .max(o.adapter.rank.saturating_mul(o.in_features + o.out_features));
            if size > BUILD_AT_MOST {
                return Ok(Vec::new());
            }
            let layer = AdaptedLinear::standalone(&o, None, None, &device)?;
            let x = Tensor::ones((2, o.in_features), candle_core::DType::F32, &Device::Cpu)?;
            Ok(finite("layer output", &layer.forward(&x)?.flatten_all()?.to_vec1::<f32>()?))
        }
        2 | 3 => {
            let mut model = bert_classifier();
            api::add_adapter(&mut model, "fuzzed", &json)?;
            Ok(finite("logits", &model.logits(&["w4 w5 w6".to_string()])?.0))
        }
        _ => {
            api::model_options(&json)?;
            Ok(Vec::new())
        }
    }
}

#[test]
fn options() {
    let strategy = (0..VALID.len(), proptest::collection::vec(json_mutation(), 1..4))
        .prop_map(|(which, mutations)| OptionsCase { which, mutations });
    fuzz("options", file!(), 512, strategy, options_case);
}
