//! Parity with Hugging Face transformers (PyTorch) on the real models. The expected numbers in
//! test/fixtures/ were produced by scripts/reference/make_fixtures.py. These tests need the
//! models in .cache/models (`npm run fetch-models`), so they are ignored by default;
//! scripts/test.sh runs them with `--ignored` when the cache is there.

use kronlora_core::api;
use kronlora_core::models::{mean_pool, Backbone};
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use kronlora_core::io::GgufFile;
use kronlora_core::models::bert::BertModel;
use kronlora_core::models::llama::LlamaModel;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join("test/fixtures").join(name)).unwrap()).unwrap()
}

fn matrix_u32(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect())
        .collect()
}

#[test]
#[ignore = "needs the real models: npm run fetch-models"]
fn minilm_mean_pooled_embeddings_match_transformers() {
    let f = fixture("minilm.json");
    let model = BertModel::load(&repo().join(".cache/models/minilm"), &Device::Cpu).unwrap();
    let ids = matrix_u32(&f["input_ids"]);
    let mask = matrix_u32(&f["attention_mask"]);
    let ids = Tensor::new(ids, &Device::Cpu).unwrap();
    let mask = Tensor::new(mask, &Device::Cpu).unwrap().to_dtype(candle_core::DType::F32).unwrap();
    let pooled = mean_pool(&model.forward(&ids, Some(&mask), None).unwrap(), &mask).unwrap().to_vec2::<f32>().unwrap();
    let want = f["mean_pooled"].as_array().unwrap();
    let mut max = 0f64;
    for (row, w) in pooled.iter().zip(want) {
        for (g, w) in row.iter().zip(w.as_array().unwrap()) {
            max = max.max((*g as f64 - w.as_f64().unwrap()).abs());
        }
    }
    eprintln!("MiniLM: max abs difference {max:.2e}");
    assert!(max < 1e-4, "MiniLM embeddings differ from transformers by {max}");
}

#[test]
#[ignore = "needs the real models: npm run fetch-models"]
fn smollm2_next_token_logits_match_transformers() {
    let f = fixture("smollm2.json");
    let file = Arc::new(GgufFile::open(&repo().join(".cache/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap());
    let model = LlamaModel::load_gguf(file, &Device::Cpu, false).unwrap();
    for case in f["cases"].as_array().unwrap() {
        let ids: Vec<u32> = case["input_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let t = ids.len();
        let logits = model.forward(&Tensor::new(vec![ids], &Device::Cpu).unwrap(), None, None).unwrap();
        let last = logits.get(0).unwrap().get(t - 1).unwrap().to_vec1::<f32>().unwrap();
        let mut max = 0f64;
        for (i, w) in case["indices"].as_array().unwrap().iter().zip(case["logits"].as_array().unwrap()) {
            max = max.max((last[i.as_u64().unwrap() as usize] as f64 - w.as_f64().unwrap()).abs());
        }
        let best = last.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(best as u64, case["top10"][0].as_u64().unwrap(), "{}: argmax differs", case["prompt"]);
        eprintln!("SmolLM2 {}: max abs difference {max:.2e}", case["prompt"]);
        assert!(max < 1e-4, "{}: logits differ from transformers by {max}", case["prompt"]);
    }
}

#[test]
#[ignore = "needs the real models: npm run fetch-models"]
fn tokenizers_match_transformers() {
    use kronlora_core::tokenizer::TextTokenizer;
    let minilm = TextTokenizer::from_file(&repo().join(".cache/models/minilm/tokenizer.json")).unwrap();
    let gguf = GgufFile::open(&repo().join(".cache/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let smollm = TextTokenizer::from_gguf(&gguf).unwrap();
    let f = fixture("smollm2.json");
    assert_eq!(smollm.bos_token_id.map(u64::from), f["bos_token_id"].as_u64());
    assert_eq!(smollm.eos_token_id.map(u64::from), f["eos_token_id"].as_u64());
    for (tok, name) in [(&minilm, "minilm.json"), (&smollm, "smollm2.json")] {
        for case in fixture(name)["tokenized"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            assert_eq!(tok.encode(text).unwrap(), want, "{name}: {text:?}");
        }
    }
    let ids = smollm.encode("Hello, world!").unwrap();
    assert_eq!(smollm.decode(&ids).unwrap(), "Hello, world!");
}

#[test]
#[ignore = "needs the real models: npm run fetch-models"]
fn pretrained_models_from_paths_and_bytes() {
    use kronlora_core::io::ModelSource;
    use kronlora_core::pretrained::GenerateOptions;
    let f = fixture("minilm.json");
    let texts: Vec<String> = f["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    let dir = repo().join(".cache/models/minilm");
    let from_path = api::load_model(ModelSource::Path(dir.clone()), r#"{"task":"embedding"}"#).unwrap();
    let files = ["config.json", "model.safetensors", "tokenizer.json"]
        .map(|n| (n.to_string(), std::fs::read(dir.join(n)).unwrap()));
    let from_bytes = api::load_model(ModelSource::Files(files.into_iter().collect()), "{}").unwrap();
    let (a, dim) = from_path.embed(&texts).unwrap();
    assert_eq!(dim, 384);
    assert_eq!(from_bytes.embed(&texts).unwrap().0, a);
    let want: Vec<f64> = f["mean_pooled"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect();
    let max = a.iter().zip(&want).map(|(g, w)| (*g as f64 - w).abs()).fold(0f64, f64::max);
    assert!(max < 1e-4, "embed() differs from transformers by {max}");

    let gguf = repo().join(".cache/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let lm = api::load_model(ModelSource::Path(gguf), "{}").unwrap();
    let g =
        lm.generate("The capital of France is", &GenerateOptions { max_tokens: 8, temperature: 0.0, seed: 0 }).unwrap();
    let s = fixture("smollm2.json");
    let first = lm.tokenizer.decode(&[s["cases"][0]["top10"][0].as_u64().unwrap() as u32]).unwrap();
    assert!(
        g.text.starts_with(&first),
        "greedy generation {:?} must start with transformers' argmax token {first:?}",
        g.text
    );
    eprintln!("SmolLM2 greedy: {:?}", g.text);
}

#[test]
#[ignore = "needs the real models: npm run fetch-models"]
fn smollm2_chat_template_renders_and_tokenizes_as_transformers() {
    use kronlora_core::data::{encode_lm_record, Record};
    use kronlora_core::tokenizer::TextTokenizer;
    let gguf = GgufFile::open(&repo().join(".cache/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let tok = TextTokenizer::from_gguf(&gguf).unwrap();
    let chat = &fixture("smollm2.json")["chat"];
    let messages: Vec<(String, String)> = chat["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_string(), m["content"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(tok.render_chat(&messages, false, "x").unwrap(), chat["text"].as_str().unwrap());
    assert_eq!(tok.render_chat(&messages[..1], true, "x").unwrap(), chat["prompt_text"].as_str().unwrap());
    // Rendering turn by turn and tokenizing the pieces gives transformers' ids for the whole
    // conversation, and only the assistant turns are scored.
    let ex = encode_lm_record(&tok, &Record::Chat { messages }, 4096, "x").unwrap();
    let want: Vec<u32> = chat["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    assert_eq!(ex.ids, want);
    let scored: Vec<u32> = ex.ids.iter().zip(&ex.loss).filter(|(_, l)| **l).map(|(i, _)| *i).collect();
    assert_eq!(tok.decode(&scored).unwrap(), "Paris.\nRome\n");
}
