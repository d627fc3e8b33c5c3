//! Training data: records of the three tasks read from JSONL (or JS arrays), label maps, and
//! seeded shuffling / splitting. Tokenisation and batching build on these.

mod batching;
mod json_text;
mod jsonl;
mod labels;
mod lm;
mod split;

pub use batching::{
    bucketed_batches, classification_batch, encode_classification, ClassificationBatch, EncodedExample,
};
pub use json_text::{parse_json, replace_lone_surrogates};
pub use jsonl::{parse_placed_records, parse_records, placed_records_from_json, Record, RecordTask, MAX_RECORD_BYTES};
pub use labels::{Label, LabelMap, LabelSummary};
pub use lm::{encode_choice_record, encode_lm_record, lm_batch, ChoiceExample, LmBatch, LmExample};
pub use split::{seeded_permutation, train_validation_split};
