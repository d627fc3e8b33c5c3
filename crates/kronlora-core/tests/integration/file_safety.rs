//! kronlora replaces or removes only what it wrote and can recognise as its own: saving an
//! adapter into a folder with other files, onto a file, a link, or a folder holding another
//! tool's adapter; checkpoint rotation and resume among foreign `checkpoint-*` entries; and
//! checkpoints whose state was edited. Every case compares the directory tree before and after.

use kronlora_core::api;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kronlora_core::io::{read_safetensors_bytes, safetensors_bytes, FsStorage};
use kronlora_core::train::{StopReason, TrainEvent};
use serde_json::{json, Value};

use crate::tiny::temp_dir;
use crate::training::{dataset, model, model_dir, params, run, Recorder, KRON, LORA};

/// Every entry under `root` (links not followed): relative path → what it is and holds.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(rel, format!("link → {}", std::fs::read_link(&path).unwrap().display()));
            } else if meta.is_dir() {
                out.insert(rel, "dir".into());
                walk(root, &path, out);
            } else {
                out.insert(rel, format!("file {:?}", std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Entries of `after` that are not in `before` or differ from it, and entries that went.
fn changes(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> (Vec<String>, Vec<String>) {
    let changed = after.iter().filter(|(k, v)| before.get(*k) != Some(v)).map(|(k, _)| k.clone()).collect();
    let gone = before.keys().filter(|k| !after.contains_key(*k)).cloned().collect();
    (changed, gone)
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A Hugging Face PEFT adapter directory (no `kronlora` block).
fn peft_adapter(dir: &Path) {
    write(
        &dir.join("adapter_config.json"),
        br#"{"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":["query","value"]}"#,
    );
    write(&dir.join("adapter_model.safetensors"), b"their weights");
}

#[test]
fn save_adapter_keeps_foreign_files_and_refuses_what_it_did_not_write() {
    let dir = model_dir("safety-save");
    let root = temp_dir("safety-save-out");
    let mut m = model(&dir, KRON);
    run(
        &mut m,
        json!({ "data": dataset(16, 1), "epochs": 1, "batchSize": 8, "learningRate": 5e-3 }),
        &mut Recorder::default(),
    )
    .unwrap();

    // Into a project folder: the user's files and sub-folder survive, the adapter loads back.
    let project = root.join("project");
    write(&project.join("notes.txt"), b"my notes");
    write(&project.join("sub/data.csv"), b"a,b\n1,2\n");
    let before = tree(&root);
    m.save_adapter(&FsStorage, &s(&project), None).unwrap();
    let after = tree(&root);
    let (changed, gone) = changes(&before, &after);
    assert_eq!(
        (changed, gone),
        (vec!["project/adapter_config.json".to_string(), "project/adapter_model.safetensors".to_string()], vec![])
    );
    let mut back = api::load_model(
        kronlora_core::io::ModelSource::Path(dir.clone()),
        r#"{"task":"sequence-classification","numLabels":2,"seed":5}"#,
    )
    .unwrap();
    back.load_adapter(&FsStorage, &s(&project), None).unwrap();
    assert_eq!(params(&back), params(&m), "the adapter saved into a folder with other files does not load back");

    // Saving again over kronlora's own adapter replaces just its two files.
    let mut other = model(&dir, KRON);
    run(
        &mut other,
        json!({ "data": dataset(16, 2), "epochs": 1, "batchSize": 8, "learningRate": 5e-3 }),
        &mut Recorder::default(),
    )
    .unwrap();
    other.save_adapter(&FsStorage, &s(&project), None).unwrap();
    let again = tree(&root);
    let (changed, gone) = changes(&after, &again);
    assert_eq!(
        (changed, gone),
        (vec!["project/adapter_model.safetensors".to_string()], vec![]),
        "only the weights differ"
    );
    assert_eq!(again["project/notes.txt"], before["project/notes.txt"]);

    // Refused, with nothing anywhere under root touched: onto a file, a link, another tool's adapter,
    // a kronlora file name that is a folder, and weights with no kronlora config beside them.
    write(&root.join("file.bin"), b"\x00precious\xff");
    let elsewhere = root.join("elsewhere");
    write(&elsewhere.join("keep.txt"), b"keep");
    #[cfg(unix)]
    std::os::unix::fs::symlink(&elsewhere, root.join("link")).unwrap();
    peft_adapter(&root.join("peft"));
    write(&root.join("folder-named-like-a-file/adapter_model.safetensors/inside.txt"), b"inside");
    write(&root.join("weights-only/adapter_model.safetensors"), b"whose?");
    let before = tree(&root);
    let mut targets = vec![
        ("file.bin", "is a file, not a directory"),
        ("peft", "peft/adapter_config.json was not written by kronlora"),
        ("folder-named-like-a-file", "adapter_model.safetensors is a directory"),
        ("weights-only", "nothing in"),
    ];
    if cfg!(unix) {
        targets.push(("link", "is a symbolic link"));
    }
    for (target, says) in targets {
        let err = m.save_adapter(&FsStorage, &s(&root.join(target)), None).unwrap_err();
        assert_eq!(err.code(), "ERR_WOULD_OVERWRITE", "{target}: {err}");
        let message = err.to_string();
        assert!(message.contains(says) && !message.contains('\n'), "{target}: {message}");
        assert_eq!(tree(&root), before, "{target}: something changed although the save was refused");
    }
}

/// An output directory as a user or another tool may have left it.
fn crowded_output_dir(out: &Path, elsewhere: &Path) {
    write(&out.join("checkpoint-0/precious.txt"), b"precious");
    write(&out.join("checkpoint-000001/precious.txt"), b"shares a name with kronlora's first checkpoint");
    write(&elsewhere.join("important.txt"), b"important");
    #[cfg(unix)]
    std::os::unix::fs::symlink(elsewhere, out.join("checkpoint-000003")).unwrap();
    for step in [500, 1000] {
        // Hugging Face Trainer's layout.
        let hf = out.join(format!("checkpoint-{step}"));
        write(
            &hf.join("trainer_state.json"),
            format!(r#"{{"global_step":{step},"epoch":1.0,"log_history":[],"best_metric":null}}"#).as_bytes(),
        );
        write(&hf.join("optimizer.pt"), b"torch pickle");
        peft_adapter(&hf);
    }
    write(&out.join("notes.md"), b"run notes");
}

#[test]
fn checkpoint_rotation_and_resume_touch_only_kronloras_own_checkpoints() {
    let dir = model_dir("safety-rotate");
    let root = temp_dir("safety-rotate-out");
    let out = root.join("out");
    let elsewhere = root.join("elsewhere");
    crowded_output_dir(&out, &elsewhere);
    let before = tree(&root);
    // 16 records, batches of 4 accumulated in pairs: 2 steps an epoch, a checkpoint after each.
    let options = |epochs: usize| {
        json!({ "data": dataset(16, 1), "validationSplit": 0, "epochs": epochs, "batchSize": 4, "gradientAccumulation": 2,
                "learningRate": 5e-3, "seed": 2, "checkpointEvery": 1, "keepCheckpoints": 1, "outputDir": s(&out) })
    };

    let mut m = model(&dir, LORA);
    let result = run(&mut m, options(1), &mut Recorder::default()).unwrap();
    assert_eq!((result.reason, result.step), (StopReason::Completed, 2));
    let checkpoint = result.checkpoint.clone().unwrap();
    assert_eq!(checkpoint, s(&out.join("checkpoint-000002")));
    assert!(Path::new(&checkpoint).join("trainer_state.json").is_file(), "result.checkpoint must exist");
    let after = tree(&root);
    let (changed, gone) = changes(&before, &after);
    assert!(gone.is_empty(), "foreign entries removed: {gone:?}");
    assert!(
        changed.iter().all(|p| p.starts_with("out/checkpoint-000002") || p.starts_with("out/adapter")),
        "foreign entries changed: {changed:?}"
    );
    // The rotation took kronlora's files out of checkpoint-000001 and left the user's file (and so the folder).
    assert_eq!(std::fs::read_dir(out.join("checkpoint-000001")).unwrap().count(), 1);
    for (path, what) in &before {
        assert_eq!(after.get(path), Some(what), "{path} changed");
    }

    // Resuming from the output directory takes kronlora's latest, not checkpoint-1000 or the link.
    let mut resumed = model(&dir, LORA);
    let mut o = options(1);
    o["resumeFrom"] = json!(s(&out));
    let mut rec = Recorder::default();
    let again = run(&mut resumed, o, &mut rec).unwrap();
    assert!(matches!(rec.events[0], TrainEvent::Start { resumed_from_step: Some(2), .. }), "{:?}", rec.events[0]);
    assert_eq!(again.losses, result.losses);
    assert_eq!(params(&resumed), params(&m));

    // A Hugging Face checkpoint is not resumed from.
    let mut o = options(1);
    o["resumeFrom"] = json!(s(&out.join("checkpoint-1000")));
    let err = run(&mut model(&dir, LORA), o, &mut Recorder::default()).unwrap_err();
    assert_eq!(err.code(), "ERR_INVALID_DATA", "{err}");
    assert!(err.to_string().contains("checkpoint-1000/trainer_state.json is not a kronlora trainer state"), "{err}");

    // A run whose checkpoint 3 would go where the link is, or whose final adapter would replace
    // another tool's, is refused before its first step, with nothing touched.
    let mut collisions = vec![];
    if cfg!(unix) {
        collisions.push((options(2), "checkpoint-000003 is a symbolic link"));
    }
    let foreign_adapter = root.join("out2");
    peft_adapter(&foreign_adapter.join("adapter"));
    let mut o = options(1);
    o["outputDir"] = json!(s(&foreign_adapter));
    collisions.push((o, "adapter/adapter_config.json was not written by kronlora"));
    let mut o = options(1);
    o["outputDir"] = json!(s(&root.join("out/notes.md")));
    collisions.push((o, "is a file, not a directory"));
    for (o, says) in collisions {
        let before = tree(&root);
        let mut rec = Recorder::default();
        let err = run(&mut model(&dir, LORA), o, &mut rec).unwrap_err();
        assert_eq!(err.code(), "ERR_WOULD_OVERWRITE", "{err}");
        assert!(err.to_string().contains(says), "{err}");
        assert!(rec.events.is_empty(), "refused after training started: {:?}", rec.events.first());
        assert_eq!(tree(&root), before);
    }
}

/// A checkpoint of a 4-step run, cancelled after step 2, and what resuming it needs.
fn checkpoint_for_crafting(name: &str) -> (PathBuf, PathBuf, Value) {
    let dir = model_dir(name);
    let out = temp_dir(&format!("{name}-out"));
    let options = json!({ "data": dataset(16, 1), "validationSplit": 0, "epochs": 2, "batchSize": 4, "gradientAccumulation": 2,
                          "learningRate": 5e-3, "seed": 2, "outputDir": s(&out) });
    let mut rec = Recorder { stop_after: Some(2), ..Default::default() };
    let cut = run(&mut model(&dir, KRON), options.clone(), &mut rec).unwrap();
    assert_eq!((cut.reason, cut.step), (StopReason::Cancelled, 2));
    (dir, PathBuf::from(cut.checkpoint.unwrap()), options)
}

#[test]
fn crafted_checkpoint_states_are_refused_before_training() {
    let (dir, checkpoint, options) = checkpoint_for_crafting("safety-crafted");
    let state: Value = serde_json::from_slice(&std::fs::read(checkpoint.join("trainer_state.json")).unwrap()).unwrap();
    let trainable = std::fs::read(checkpoint.join("trainable.safetensors")).unwrap();
    let optimizer = std::fs::read(checkpoint.join("optimizer.safetensors")).unwrap();
    let tensors = |bytes: &[u8]| read_safetensors_bytes(bytes, "x").unwrap().into_iter().collect::<Vec<_>>();
    type Edit<'a> = &'a dyn Fn(&mut Vec<(String, kronlora_core::TensorData)>);
    let rewrite = |bytes: &[u8], step: &str, edit: Edit| {
        let mut t = tensors(bytes);
        edit(&mut t);
        safetensors_bytes(&t, &[("format", "pt"), ("step", step)]).unwrap()
    };
    let edit_state = |f: &dyn Fn(&mut Value)| {
        let mut s = state.clone();
        f(&mut s);
        serde_json::to_vec(&s).unwrap()
    };
    type Case = (&'static str, Vec<u8>, Vec<u8>, Vec<u8>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "epoch",
            edit_state(&|s| s["epoch"] = json!(1_000_000_000_000_000u64)),
            trainable.clone(),
            optimizer.clone(),
            "trainer_state.json: `epoch` is 1000000000000000",
        ),
        (
            "epoch-float",
            edit_state(&|s| s["epoch"] = json!(1e15)),
            trainable.clone(),
            optimizer.clone(),
            "trainer_state.json: not a kronlora trainer state",
        ),
        (
            "batch",
            edit_state(&|s| s["batch"] = json!(1_000_000_000_000_000u64)),
            trainable.clone(),
            optimizer.clone(),
            "trainer_state.json: `batch` is 1000000000000000",
        ),
        (
            "step",
            edit_state(&|s| s["step"] = json!(1u64 << 63)),
            rewrite(&trainable, "9223372036854775808", &|_| {}),
            rewrite(&optimizer, "9223372036854775808", &|_| {}),
            "`step` is 9223372036854775808",
        ),
        (
            "step-position",
            edit_state(&|s| {
                s["step"] = json!(1);
                s["losses"] = json!([0.5])
            }),
            rewrite(&trainable, "1", &|_| {}),
            rewrite(&optimizer, "1", &|_| {}),
            "`step` is 1, but `epoch` 1 and `batch` 0 are the position after step 2",
        ),
        (
            "total",
            edit_state(&|s| s["totalSteps"] = json!(400)),
            trainable.clone(),
            optimizer.clone(),
            "`totalSteps` is 400, but these options and data make 4 steps",
        ),
        (
            "losses",
            edit_state(&|s| s["losses"] = json!([0.5])),
            trainable.clone(),
            optimizer.clone(),
            "`losses` holds 1 values for 2 steps",
        ),
        (
            "labels",
            edit_state(&|s| s["labels"] = json!(["a", "b"])),
            trainable.clone(),
            optimizer.clone(),
            "`labels` are [\"a\", \"b\"]",
        ),
        (
            "parameters",
            edit_state(&|s| {
                s["parameters"].as_array_mut().unwrap().pop();
            }),
            trainable.clone(),
            optimizer.clone(),
            "trainable.safetensors: holds",
        ),
        (
            "mixed",
            state.to_string().into_bytes(),
            rewrite(&trainable, "1", &|_| {}),
            optimizer.clone(),
            "trainable.safetensors: written at step 1",
        ),
        (
            "nan",
            state.to_string().into_bytes(),
            rewrite(&trainable, "2", &|t| t[0].1.data[0] = f32::NAN),
            optimizer.clone(),
            "holds NaN",
        ),
        (
            "shape",
            state.to_string().into_bytes(),
            rewrite(&trainable, "2", &|t| t[0].1.shape = vec![t[0].1.data.len(), 1]),
            optimizer.clone(),
            "has shape",
        ),
        (
            "negative-v",
            state.to_string().into_bytes(),
            trainable.clone(),
            rewrite(&optimizer, "2", &|t| {
                let v = t.iter_mut().find(|(n, _)| n.starts_with("v.")).unwrap();
                v.1.data[0] = -1.0;
            }),
            "optimizer.safetensors: tensor `v.0`",
        ),
    ];
    for (name, state, trainable, optimizer, says) in cases {
        let crafted = temp_dir(&format!("safety-crafted-{name}"));
        for entry in std::fs::read_dir(&checkpoint).unwrap() {
            let entry = entry.unwrap();
            write(&crafted.join(entry.file_name()), &std::fs::read(entry.path()).unwrap());
        }
        write(&crafted.join("trainer_state.json"), &state);
        write(&crafted.join("trainable.safetensors"), &trainable);
        write(&crafted.join("optimizer.safetensors"), &optimizer);
        let mut o = options.clone();
        o["resumeFrom"] = json!(s(&crafted));
        let mut rec = Recorder::default();
        let err = run(&mut model(&dir, KRON), o, &mut rec).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_DATA", "{name}: {err}");
        assert!(err.to_string().contains(says), "{name}: {err}");
        assert!(rec.events.is_empty(), "{name}: training started");
    }
}
