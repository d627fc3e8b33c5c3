//! The largest sizes kronlora accepts, from options or from files. Each is far above any real
//! model's and small enough that a typo (`1e12`) or a hostile file is an error instead of an
//! allocation that would abort the process.

/// Largest layer width (16 777 216).
pub const MAX_FEATURES: usize = 1 << 24;
/// Most adapter parameters one layer may ask for (8 GiB of f32).
pub const MAX_ADAPTER_PARAMETERS: usize = 1 << 31;
/// Most classes a classification head may have: more than any real label set (ImageNet-21k
/// has 21 841), small enough that a typo cannot ask for a head of gigabytes.
pub const MAX_NUM_LABELS: usize = 1 << 16;
/// Most parameters a classification head may have (1 GiB of f32, before gradients and AdamW).
pub const MAX_HEAD_PARAMETERS: usize = 1 << 28;
/// Largest adapter rank.
pub const MAX_RANK: usize = 1 << 16;
/// The largest |alpha| an adapter may have, created or read from a file. Real adapters use 1 to
/// a few thousand (alpha is usually r or 2r); far beyond that the update swamps the layer and
/// outputs overflow to infinity.
pub const MAX_ALPHA: f64 = 1e6;
