//! Gradient checkpointing (`gradientCheckpointing: true`) recomputes each block in backward:
//! the loss and every trainable parameter's gradient must be those of the plain backward, with
//! adapter dropout on (the recomputed block must draw the same masks), for an encoder with a
//! classification head and for a decoder; and a training run gives the same losses.

use candle_core::{Device, Tensor};
use kronlora_core::api;
use kronlora_core::io::{FsStorage, ModelSource};
use kronlora_core::models::checkpoint::{take_parameter_grads, with_checkpointing};
use kronlora_core::pretrained::PretrainedModel;

use crate::reference::Lcg;
use crate::tiny::llama::{temp_dir, tensors, write_gguf};
use crate::tiny::tiny_classifier;
use crate::training::Recorder;

pub(crate) fn randomise(model: &PretrainedModel, seed: u64) {
    let mut rng = Lcg::new(seed);
    for var in model.trainable_variables() {
        let v: Vec<f32> = rng.vec(var.elem_count()).into_iter().map(|x| x * 0.3).collect();
        var.set(&Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap()).unwrap();
    }
}

/// A loss of `output` that weighs every element differently: `Σ output ⊙ r`.
fn weighted_sum(output: &Tensor, seed: u64) -> Tensor {
    let r = Tensor::from_vec(Lcg::new(seed).vec(output.elem_count()), output.shape(), output.device()).unwrap();
    (output * r).unwrap().sum_all().unwrap()
}

/// The loss and each trainable variable's gradient, summed over the outer backward and the
/// stores of recomputed blocks (as the trainer sums them).
pub(crate) fn loss_and_grads(
    model: &PretrainedModel,
    checkpointing: bool,
    output: impl Fn() -> Tensor,
) -> (f32, Vec<Vec<f32>>) {
    let vars = model.trainable_variables();
    with_checkpointing(checkpointing.then(|| vars.clone()), || {
        model.set_dropout_seed(Some(99));
        let loss = weighted_sum(&output(), 5);
        let outer = loss.backward().unwrap();
        let from_blocks = take_parameter_grads();
        model.set_dropout_seed(None);
        assert_eq!(from_blocks.len(), if checkpointing { vars.len() } else { 0 });
        let grads = vars
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let parts: Vec<Tensor> = outer
                    .get(v.as_tensor())
                    .cloned()
                    .into_iter()
                    .chain(from_blocks.get(i).cloned().flatten())
                    .collect();
                assert_eq!(parts.len(), 1, "variable {i}: its gradient comes from one place (its block or the head)");
                parts[0].flatten_all().unwrap().to_vec1::<f32>().unwrap()
            })
            .collect();
        (loss.to_scalar::<f32>().unwrap(), grads)
    })
}

fn assert_same(plain: &(f32, Vec<Vec<f32>>), checkpointed: &(f32, Vec<Vec<f32>>)) {
    assert!(
        (plain.0 - checkpointed.0).abs() <= 1e-5 * plain.0.abs().max(1.0),
        "loss {} vs {}",
        plain.0,
        checkpointed.0
    );
    for (i, (a, b)) in plain.1.iter().zip(&checkpointed.1).enumerate() {
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(d <= 1e-5 * scale, "variable {i}: gradients differ by {d} (largest {scale})");
        assert!(a.iter().any(|v| *v != 0.0), "variable {i}: a zero gradient tests nothing");
    }
}

#[test]
fn checkpointed_encoder_gives_the_plain_loss_and_gradients() {
    let dir = temp_dir("checkpointing-bert");
    let mut model = tiny_classifier(&dir.join("model"), 4, 3);
    api::add_adapter(
        &mut model,
        "k",
        r#"{"type":"kron-lora","rank":2,"alpha":4,"targetModules":"all-linear","dropout":0.2}"#,
    )
    .unwrap();
    api::add_adapter(&mut model, "l", r#"{"type":"lora","rank":2,"alpha":4,"targetModules":["query","value"]}"#)
        .unwrap();
    api::set_active_adapters(&mut model, r#"{"adapters":["k","l"]}"#).unwrap();
    randomise(&model, 3);
    let ids = Tensor::new(&[[1u32, 2, 3, 1, 0], [3, 3, 2, 0, 0]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1f32, 1., 1., 1., 1.], [1., 1., 1., 0., 0.]], &Device::Cpu).unwrap();
    let output = || model.classification_logits(&ids, &mask).unwrap();
    assert_same(&loss_and_grads(&model, false, output), &loss_and_grads(&model, true, output));
}

#[test]
fn checkpointed_decoder_gives_the_plain_loss_and_gradients() {
    let dir = temp_dir("checkpointing-llama");
    let gguf = dir.join("tiny.gguf");
    write_gguf(&gguf, &tensors(6, false));
    let mut model = api::load_model(ModelSource::Path(gguf), "{}").unwrap();
    api::add_adapter(
        &mut model,
        "k",
        r#"{"type":"kron-lora","rank":2,"alpha":4,"targetModules":"all-linear","dropout":0.1}"#,
    )
    .unwrap();
    randomise(&model, 8);
    let ids = Tensor::new(&[[5u32, 77, 102, 33, 260, 9], [7, 8, 9, 10, 11, 12]], &Device::Cpu).unwrap();
    let output = || model.backbone.forward(&ids, None, None).unwrap();
    assert_same(&loss_and_grads(&model, false, output), &loss_and_grads(&model, true, output));
}

#[test]
fn a_checkpointed_training_run_has_the_plain_losses() {
    let dir = temp_dir("checkpointing-train");
    let gguf = dir.join("tiny.gguf");
    write_gguf(&gguf, &tensors(7, false));
    let data = r#"[{"text":"the cat sat on the mat"},{"text":"a hat, the hat"},{"text":"that the cat is there"}]"#;
    let losses = |checkpointing: bool| -> Vec<f64> {
        let mut model = api::load_model(ModelSource::Path(gguf.clone()), "{}").unwrap();
        api::add_adapter(
            &mut model,
            "k",
            r#"{"type":"kron-lora","rank":2,"alpha":4,"targetModules":"all-linear","dropout":0.1}"#,
        )
        .unwrap();
        let options = format!(
            r#"{{"data":{data},"epochs":3,"batchSize":2,"learningRate":0.05,"validationSplit":0,"seed":3,"gradientCheckpointing":{checkpointing}}}"#
        );
        let result = api::train_json(&mut model, &options, &FsStorage, &mut Recorder::default()).unwrap();
        let result: serde_json::Value = serde_json::from_str(&result).unwrap();
        result["losses"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
    };
    let (plain, checkpointed) = (losses(false), losses(true));
    assert_eq!(plain.len(), 6);
    for (a, b) in plain.iter().zip(&checkpointed) {
        assert!((a - b).abs() <= 1e-5 * a.abs(), "losses {plain:?} vs {checkpointed:?}");
    }
}
