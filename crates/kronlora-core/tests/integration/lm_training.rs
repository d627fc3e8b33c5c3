//! Causal-LM and multiple-choice training on a tiny generated Llama (GGUF): only the completion
//! (or the assistant's turns) is scored, padded batches score like single sequences, multiple
//! choice is scored by summed log-likelihood (checked against a naive computation), and the
//! loss falls.

use crate::json_api::{evaluate_model, train};
use crate::tiny::llama::{temp_dir, tensors, write_gguf};
use candle_core::{Device, Tensor};
use kronlora_core::api;
use kronlora_core::data::{encode_lm_record, Record};
use kronlora_core::io::{FsStorage, ModelSource};
use kronlora_core::pretrained::PretrainedModel;
use kronlora_core::train::{TrainEvent, TrainObserver};
use serde_json::json;

struct Quiet;
impl TrainObserver for Quiet {
    fn event(&mut self, _: &TrainEvent) {}
}

fn model(name: &str) -> PretrainedModel {
    let dir = temp_dir(name);
    let gguf = dir.join("tiny.gguf");
    write_gguf(&gguf, &tensors(5, true));
    api::load_model(ModelSource::Path(gguf), "{}").unwrap()
}

/// Σ log p(token) over `ids[from..]`, each given what precedes it, from a full forward in f64.
fn naive_log_likelihood(m: &PretrainedModel, ids: &[u32], from: usize) -> f64 {
    let logits =
        m.backbone.forward(&Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap(), None, None).unwrap();
    let rows: Vec<Vec<f32>> = logits.squeeze(0).unwrap().to_vec2().unwrap();
    (from.max(1)..ids.len())
        .map(|i| {
            let row = &rows[i - 1];
            let max = row.iter().copied().fold(f32::MIN, f32::max) as f64;
            let z: f64 = row.iter().map(|v| (*v as f64 - max).exp()).sum::<f64>().ln() + max;
            row[ids[i] as usize] as f64 - z
        })
        .sum()
}

#[test]
fn only_completions_and_assistant_turns_are_scored() {
    let m = model("mask");
    let t = &m.tokenizer;
    let r = Record::PromptCompletion { prompt: "a the".into(), completion: " the b".into() };
    let ex = encode_lm_record(t, &r, 64, "x").unwrap();
    let prompt_len = t.encode_plain("a the").unwrap().len();
    assert!(ex.loss[..prompt_len].iter().all(|l| !l) && ex.loss[prompt_len..].iter().all(|l| *l));
    assert_eq!(ex.ids.last().copied(), t.eos_token_id, "an end token closes the completion");
    let scored: Vec<u32> = ex.ids.iter().zip(&ex.loss).filter(|(_, l)| **l).map(|(i, _)| *i).collect();
    assert_eq!(t.decode(&scored).unwrap(), " the b");

    let chat = Record::Chat {
        messages: vec![
            ("user".into(), "hi".into()),
            ("assistant".into(), "yo".into()),
            ("user".into(), "ok?".into()),
            ("assistant".into(), "ok".into()),
        ],
    };
    let ex = encode_lm_record(t, &chat, 64, "x").unwrap();
    let scored: Vec<u32> = ex.ids.iter().zip(&ex.loss).filter(|(_, l)| **l).map(|(i, _)| *i).collect();
    let all = t.decode(&ex.ids).unwrap();
    assert_eq!(all, "<user>hi\n<assistant>yo\n<user>ok?\n<assistant>ok\n");
    assert_eq!(t.decode(&scored).unwrap(), "yo\nok\n");

    // Truncation that leaves nothing to learn, and an empty text, are errors.
    let err = encode_lm_record(t, &r, prompt_len, "train.jsonl:4").unwrap_err();
    assert!(err.to_string().contains("train.jsonl:4: no token is left to learn from"), "{err}");
    let err = encode_lm_record(t, &Record::Text { text: String::new() }, 64, "train.jsonl:2").unwrap_err();
    assert!(err.to_string().starts_with("train.jsonl:2"), "{err}");
}

#[test]
fn padded_batches_score_like_single_sequences() {
    let m = model("pad");
    let data = json!([{ "text": "a the a the b c" }, { "text": "b" }, { "prompt": "the", "completion": " a b" }]);
    let together = evaluate_model(&m, &data.to_string(), r#"{"batchSize":3}"#, &FsStorage).unwrap();
    let mut total = 0.0;
    let mut tokens = 0usize;
    for r in data.as_array().unwrap() {
        let record = if r.get("text").is_some() {
            Record::Text { text: r["text"].as_str().unwrap().into() }
        } else {
            Record::PromptCompletion { prompt: "the".into(), completion: " a b".into() }
        };
        let ex = encode_lm_record(&m.tokenizer, &record, 128, "x").unwrap();
        let first = ex.loss.iter().skip(1).position(|l| *l).unwrap() + 1;
        total -= naive_log_likelihood(&m, &ex.ids, first);
        tokens += ex.loss.iter().skip(1).filter(|l| **l).count();
    }
    let naive = total / tokens as f64;
    assert!((together.loss - naive).abs() < 1e-4, "{} vs {naive}", together.loss);
    assert!((together.perplexity.unwrap() - naive.exp()).abs() < 1e-3 * naive.exp());
}

#[test]
fn multiple_choice_is_scored_by_summed_log_likelihood() {
    let m = model("mc");
    let data = json!([
        { "question": "a the", "choices": ["b", "the c", "d"], "answer": 1 },
        { "question": "c", "choices": ["a", "b"], "answer": 0 },
    ]);
    let metrics =
        evaluate_model(&m, &data.to_string(), r#"{"task":"multiple-choice","batchSize":2}"#, &FsStorage).unwrap();
    let (mut loss, mut correct) = (0.0, 0);
    for q in data.as_array().unwrap() {
        let question = q["question"].as_str().unwrap();
        let prefix = m.tokenizer.encode_plain(question).unwrap();
        let scores: Vec<f64> = q["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let mut ids = prefix.clone();
                ids.extend(m.tokenizer.encode_plain(&format!(" {}", c.as_str().unwrap())).unwrap());
                naive_log_likelihood(&m, &ids, prefix.len())
            })
            .collect();
        let answer = q["answer"].as_u64().unwrap() as usize;
        let z = scores.iter().map(|s| s.exp()).sum::<f64>().ln();
        loss += z - scores[answer];
        let best = (0..scores.len()).fold(0, |b, i| if scores[i] > scores[b] { i } else { b });
        correct += usize::from(best == answer);
    }
    assert!((metrics.loss - loss / 2.0).abs() < 1e-4, "{} vs {}", metrics.loss, loss / 2.0);
    assert_eq!(metrics.accuracy, Some(correct as f64 / 2.0));
}

#[test]
fn causal_lm_and_multiple_choice_training_lower_the_loss() {
    for (task, data) in [
        (
            "causal-lm",
            json!([{ "prompt": "a", "completion": " the b" }, { "text": "c the c the" }, { "messages": [{ "role": "user", "content": "a" }, { "role": "assistant", "content": "b" }] }]),
        ),
        (
            "multiple-choice",
            json!([{ "question": "a", "choices": ["b", "c"], "answer": 1 }, { "question": "b", "choices": ["c", "a"], "answer": 0 }]),
        ),
    ] {
        for adapter in [
            r#"{"type":"kron-lora","rank":2,"alpha":4,"targetModules":"all-linear"}"#,
            r#"{"type":"lora","rank":4,"alpha":8,"targetModules":"all-linear"}"#,
        ] {
            let mut m = model("lm-train");
            api::add_adapter(&mut m, "default", adapter).unwrap();
            let options = json!({ "task": task, "data": data, "validationData": data, "epochs": 15, "batchSize": 4, "learningRate": 2e-2, "warmupRatio": 0 });
            let before =
                evaluate_model(&m, &data.to_string(), &json!({ "task": task }).to_string(), &FsStorage).unwrap();
            let result = train(&mut m, &options.to_string(), &FsStorage, &mut Quiet).unwrap();
            let after = result.metrics.unwrap();
            assert!(after.loss < before.loss * 0.7, "{task} {adapter}: {} → {}", before.loss, after.loss);
            if task == "multiple-choice" {
                assert_eq!(after.accuracy, Some(1.0));
            }
        }
    }
}

#[test]
fn encoder_tasks_and_decoder_tasks_do_not_mix() {
    let mut m = model("mix");
    api::add_adapter(&mut m, "default", r#"{"type":"lora","rank":2,"alpha":4,"targetModules":"all-linear"}"#).unwrap();
    let err = train(
        &mut m,
        &json!({ "task": "classification", "data": [{ "text": "a", "label": 0 }] }).to_string(),
        &FsStorage,
        &mut Quiet,
    )
    .unwrap_err();
    assert!(err.to_string().contains("classification needs an encoder"), "{err}");
}
