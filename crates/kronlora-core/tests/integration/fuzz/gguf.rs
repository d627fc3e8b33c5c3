//! GGUF files (the tiny Llama) with their structure mutated: every count, string and array
//! length, type id, tensor dimension, tensor type, tensor offset and metadata value is found by
//! walking the file, and one of them is set to an extreme, or the bytes are cut or flipped.
//! Then `PretrainedModel::load` (from memory or disk), logits and a short generation.

use kronlora_core::api;
use kronlora_core::io::ModelSource;
use kronlora_core::pretrained::GenerateOptions;
use proptest::prelude::*;
use proptest::sample::Index;

use super::mutate::{apply_bytes, byte_mutation, extreme_integer, ByteMutation};
use super::tiny_files::{self, case_dir};
use super::{asserted, finite, fuzz, CaseResult, Property};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Tensor and metadata counts, string and array lengths.
    Length,
    /// Metadata value types and array element types.
    ValueType,
    IntegerValue,
    FloatValue,
    TensorRank,
    TensorDim,
    TensorType,
    TensorOffset,
}

const KINDS: [Kind; 8] = [
    Kind::Length,
    Kind::ValueType,
    Kind::IntegerValue,
    Kind::FloatValue,
    Kind::TensorRank,
    Kind::TensorDim,
    Kind::TensorType,
    Kind::TensorOffset,
];

#[derive(Debug, Clone, Copy)]
struct Field {
    offset: usize,
    width: usize,
    kind: Kind,
}

struct Walker<'a> {
    bytes: &'a [u8],
    at: usize,
    fields: Vec<Field>,
}

impl Walker<'_> {
    fn take(&mut self, width: usize, kind: Option<Kind>) -> u64 {
        let mut v = [0u8; 8];
        v[..width].copy_from_slice(&self.bytes[self.at..self.at + width]);
        if let Some(kind) = kind {
            self.fields.push(Field { offset: self.at, width, kind });
        }
        self.at += width;
        u64::from_le_bytes(v)
    }

    fn string(&mut self) {
        let len = self.take(8, Some(Kind::Length)) as usize;
        self.at += len;
    }

    fn value(&mut self, ty: u64, in_array: bool) {
        // Long arrays (the vocabulary) are walked but only their first elements recorded.
        let record = |kind| (!in_array).then_some(kind);
        match ty {
            0 | 1 | 7 => self.at += 1,
            2 | 3 => {
                self.take(2, record(Kind::IntegerValue));
            }
            4 | 5 => {
                self.take(4, record(Kind::IntegerValue));
            }
            10 | 11 => {
                self.take(8, record(Kind::IntegerValue));
            }
            6 => {
                self.take(4, record(Kind::FloatValue));
            }
            12 => {
                self.take(8, record(Kind::FloatValue));
            }
            8 if in_array => {
                self.at += 8 + u64::from_le_bytes(self.bytes[self.at..self.at + 8].try_into().unwrap()) as usize
            }
            8 => self.string(),
            9 => {
                let elem = self.take(4, Some(Kind::ValueType));
                let len = self.take(8, Some(Kind::Length));
                for _ in 0..len {
                    self.value(elem, true);
                }
            }
            other => panic!("the generator wrote GGUF value type {other}"),
        }
    }
}

/// The mutable fields of a valid GGUF v3 file.
fn fields(bytes: &[u8]) -> Vec<Field> {
    let mut w = Walker { bytes, at: 8, fields: Vec::new() };
    let tensors = w.take(8, Some(Kind::Length));
    let kvs = w.take(8, Some(Kind::Length));
    for _ in 0..kvs {
        w.string();
        let ty = w.take(4, Some(Kind::ValueType));
        w.value(ty, false);
    }
    for _ in 0..tensors {
        w.string();
        let rank = w.take(4, Some(Kind::TensorRank));
        for _ in 0..rank {
            w.take(8, Some(Kind::TensorDim));
        }
        w.take(4, Some(Kind::TensorType));
        w.take(8, Some(Kind::TensorOffset));
    }
    w.fields
}

fn all_fields() -> &'static [Field] {
    static FIELDS: std::sync::OnceLock<Vec<Field>> = std::sync::OnceLock::new();
    FIELDS.get_or_init(|| fields(tiny_files::gguf()))
}

#[derive(Debug, Clone)]
pub enum GgufMutation {
    /// Set a field of a kind to a value (integers: an extreme; floats: see `FLOATS`).
    Field {
        kind: Index,
        field: Index,
        value: u64,
    },
    /// An F32 field set to a hostile float (NaN, ±∞, negative, zero, huge).
    Float {
        field: Index,
        value: f32,
    },
    /// A tensor's type id set to one of ggml's (a different block size over the same data).
    TensorType {
        field: Index,
        ggml_type: u32,
    },
    Bytes(ByteMutation),
}

const FLOATS: [f32; 8] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -1.0, 0.0, 1e30, -1e-5, f32::MIN_POSITIVE];

fn gguf_mutation() -> impl Strategy<Value = GgufMutation> {
    prop_oneof![
        4 => (any::<Index>(), any::<Index>(), extreme_integer()).prop_map(|(kind, field, value)| GgufMutation::Field { kind, field, value }),
        1 => (any::<Index>(), proptest::sample::select(FLOATS.to_vec())).prop_map(|(field, value)| GgufMutation::Float { field, value }),
        // 0 F32, 1 F16, 2 Q4_0, 3 Q4_1, 8 Q8_0, 12 Q4K, 30 BF16, and ids ggml does not have.
        2 => (any::<Index>(), proptest::sample::select(vec![0u32, 1, 2, 3, 6, 8, 10, 12, 14, 15, 16, 30, 31, 39, 1000])).prop_map(|(field, ggml_type)| GgufMutation::TensorType { field, ggml_type }),
        2 => byte_mutation().prop_map(GgufMutation::Bytes),
    ]
}

/// Fields are found in the valid file; an earlier truncation may have cut this one off.
fn write(bytes: &mut [u8], f: &Field, value: u64) {
    if let Some(slot) = bytes.get_mut(f.offset..f.offset + f.width) {
        slot.copy_from_slice(&value.to_le_bytes()[..f.width]);
    }
}

fn pick(kind: Kind, i: &Index) -> Option<Field> {
    let of_kind: Vec<&Field> = all_fields().iter().filter(|f| f.kind == kind).collect();
    (!of_kind.is_empty()).then(|| *of_kind[i.index(of_kind.len())])
}

fn mutated(mutations: &[GgufMutation]) -> Vec<u8> {
    let mut bytes = tiny_files::gguf().to_vec();
    // See `Property::HugeAllocations`: what lengths and ranks may claim in this run.
    let cap = if asserted("gguf_llama", Property::HugeAllocations) { u64::MAX } else { 1 << 31 };
    for m in mutations {
        match m {
            GgufMutation::Field { kind, field, value } => {
                let kind = KINDS[kind.index(KINDS.len())];
                if let Some(f) = pick(kind, field) {
                    let capped = matches!(kind, Kind::Length | Kind::TensorRank);
                    write(&mut bytes, &f, if capped { (*value).min(cap) } else { *value });
                }
            }
            GgufMutation::Float { field, value } => {
                if let Some(f) = pick(Kind::FloatValue, field).filter(|f| f.width == 4) {
                    write(&mut bytes, &f, value.to_bits() as u64);
                }
            }
            GgufMutation::TensorType { field, ggml_type } => {
                if let Some(f) = pick(Kind::TensorType, field) {
                    write(&mut bytes, &f, *ggml_type as u64);
                }
            }
            // An overwrite may land on a length field too.
            GgufMutation::Bytes(ByteMutation::Overwrite { at, wide, value }) => {
                apply_bytes(&mut bytes, &ByteMutation::Overwrite { at: *at, wide: *wide, value: (*value).min(cap) })
            }
            GgufMutation::Bytes(b) => apply_bytes(&mut bytes, b),
        }
    }
    bytes
}

#[derive(Debug, Clone)]
pub struct GgufCase {
    mutations: Vec<GgufMutation>,
    on_disk: bool,
}

fn gguf_case(case: &GgufCase) -> CaseResult {
    let bytes = mutated(&case.mutations);
    let model = if case.on_disk {
        let dir = case_dir("gguf");
        let path = dir.join("tiny.gguf");
        std::fs::write(&path, bytes).unwrap();
        let model = api::load_model(ModelSource::Path(path), "{}");
        let _ = std::fs::remove_dir_all(&dir);
        model?
    } else {
        api::load_model(ModelSource::Files([("tiny.gguf".to_string(), bytes)].into()), "{}")?
    };
    let problems = finite("logits", &model.logits(&["a the".to_string()])?.0);
    model.generate("the", &GenerateOptions { max_tokens: 3, temperature: 0.0, seed: 1 })?;
    Ok(problems)
}

#[test]
fn gguf_llama() {
    let strategy = (proptest::collection::vec(gguf_mutation(), 1..3), any::<bool>())
        .prop_map(|(mutations, on_disk)| GgufCase { mutations, on_disk });
    fuzz("gguf_llama", file!(), 128, strategy, gguf_case);
}

#[test]
fn the_walker_finds_every_tensor_of_the_tiny_gguf() {
    let f = all_fields();
    let count = |k: Kind| f.iter().filter(|x| x.kind == k).count();
    // 1 + 2 × 9 + 1 tensors (tied head), each with a type, an offset and two dims (norms: one).
    assert_eq!(count(Kind::TensorType), 20);
    assert_eq!(count(Kind::TensorOffset), 20);
    assert_eq!(count(Kind::TensorDim), 20 * 2 - 5);
}
