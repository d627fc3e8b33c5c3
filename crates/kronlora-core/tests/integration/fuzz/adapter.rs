//! Adapter directories (adapter_config.json + adapter_model.safetensors) saved from the tiny
//! BERT classifier with trained-looking (random, non-zero) LoRA and Kron-LoRA factors and
//! head, mutated, through `load_adapter` onto a fresh model, then class logits.

use kronlora_core::api;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use proptest::prelude::*;

use super::memory_storage::MemoryStorage;
use super::mutate::{
    apply_json, apply_safetensors, json_mutation, safetensors_mutation, JsonMutation, SafetensorsMutation,
};
use super::tiny_files::bert_classifier;
use super::{finite, fuzz, CaseResult};
use crate::reference::Lcg;

const KINDS: [&str; 2] = [
    r#"{"type":"lora","rank":4,"alpha":8,"targetModules":"all-linear"}"#,
    r#"{"type":"kron-lora","rank":2,"alpha":4,"kronIn":2,"kronOut":4,"targetModules":["query","value"]}"#,
];

/// The two files of each adapter kind, saved with non-zero factors.
fn saved(kind: usize) -> &'static BTreeMap<String, Vec<u8>> {
    static SAVED: OnceLock<Vec<BTreeMap<String, Vec<u8>>>> = OnceLock::new();
    &SAVED.get_or_init(|| {
        KINDS
            .iter()
            .map(|options| {
                let mut model = bert_classifier();
                api::add_adapter(&mut model, "fuzzed", options).unwrap();
                let mut rng = Lcg::new(5);
                for var in kronlora_core::train::trainable_named(&model).iter().map(|(_, v)| v) {
                    let values: Vec<f32> = rng.vec(var.elem_count()).into_iter().map(|v| v * 0.2).collect();
                    var.set(&Tensor::from_vec(values, var.dims(), &Device::Cpu).unwrap()).unwrap();
                }
                model
                    .adapter_files(None)
                    .unwrap()
                    .into_iter()
                    .map(|(name, bytes)| (format!("adapter/{name}"), bytes))
                    .collect()
            })
            .collect()
    })[kind]
}

#[derive(Debug, Clone)]
pub enum AdapterMutation {
    Config(JsonMutation),
    Weights(SafetensorsMutation),
}

#[derive(Debug, Clone)]
pub struct AdapterCase {
    kind: usize,
    mutations: Vec<AdapterMutation>,
}

fn adapter_case(case: &AdapterCase) -> CaseResult {
    let mut files = saved(case.kind).clone();
    for m in &case.mutations {
        match m {
            AdapterMutation::Config(j) => {
                let f = files.get_mut("adapter/adapter_config.json").unwrap();
                *f = apply_json(f, j);
            }
            AdapterMutation::Weights(s) => {
                apply_safetensors(files.get_mut("adapter/adapter_model.safetensors").unwrap(), s)
            }
        }
    }
    let mut model = bert_classifier();
    model.load_adapter(&MemoryStorage::new(files), "adapter", None)?;
    Ok(finite("logits", &model.logits(&["w4 w5 w6".to_string(), "w12".to_string()])?.0))
}

#[test]
fn adapter_dir() {
    let mutation = prop_oneof![1 => json_mutation().prop_map(AdapterMutation::Config), 1 => safetensors_mutation().prop_map(AdapterMutation::Weights)];
    let strategy = (0..KINDS.len(), proptest::collection::vec(mutation, 1..3))
        .prop_map(|(kind, mutations)| AdapterCase { kind, mutations });
    fuzz("adapter_dir", file!(), 128, strategy, adapter_case);
}
