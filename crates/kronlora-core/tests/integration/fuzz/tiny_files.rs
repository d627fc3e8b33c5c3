//! The valid files every target starts from, made once by the tiny-model generators.

use kronlora_core::api;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use kronlora_core::io::ModelSource;
use kronlora_core::pretrained::PretrainedModel;

use crate::tiny;
use crate::tiny::llama;

pub type Files = BTreeMap<String, Vec<u8>>;

fn read_all(dir: &std::path::Path) -> Files {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// config.json, model.safetensors and tokenizer.json of the tiny BERT.
pub fn bert() -> &'static Files {
    static FILES: OnceLock<Files> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = tiny::temp_dir("fuzz-bert");
        tiny::write_model(&dir, &tiny::tiny_bert_tensors(11), tiny::CONFIG);
        std::fs::write(dir.join("tokenizer.json"), tiny::word_tokenizer(50)).unwrap();
        let files = read_all(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        files
    })
}

/// config.json, model.safetensors and tokenizer.json of the tiny Llama (untied head).
pub fn llama_hf() -> &'static Files {
    static FILES: OnceLock<Files> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = llama::temp_dir("fuzz-hf");
        llama::write_hf_dir(&dir, &llama::tensors(3, false), false);
        std::fs::write(dir.join("tokenizer.json"), tiny::word_tokenizer(llama::VOCAB)).unwrap();
        let files = read_all(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        files
    })
}

/// The tiny Llama as a GGUF file (F32 tensors, byte-level BPE, a chat template).
pub fn gguf() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = llama::temp_dir("fuzz-gguf");
        let path = dir.join("tiny.gguf");
        llama::write_gguf(&path, &llama::tensors(4, true));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        bytes
    })
}

pub const CLASSIFIER_OPTIONS: &str = r#"{"task":"sequence-classification","numLabels":2,"seed":1}"#;

/// The tiny BERT loaded from memory with a classification head (every case gets its own).
pub fn bert_classifier() -> PretrainedModel {
    api::load_model(ModelSource::Files(bert().clone()), CLASSIFIER_OPTIONS).expect("the tiny BERT loads")
}

/// The tiny GGUF Llama loaded from memory.
pub fn gguf_llama() -> PretrainedModel {
    api::load_model(ModelSource::Files([("tiny.gguf".to_string(), gguf().to_vec())].into()), "{}")
        .expect("the tiny GGUF loads")
}

/// A directory of its own for one case on disk (removed by the caller).
pub fn case_dir(target: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "kronlora-fuzz-{}-{target}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
