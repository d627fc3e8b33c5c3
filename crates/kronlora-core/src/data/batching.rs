//! Tokenised examples and padded batches: truncation to `max_length`, dynamic padding (to the
//! longest sequence of each batch), and seeded, length-bucketed batch order.

use candle_core::{Device, Tensor};

use super::split::seeded_permutation;
use crate::error::{Error, Result};
use crate::tokenizer::TextTokenizer;

/// One tokenised classification example.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedExample {
    pub ids: Vec<u32>,
    pub label: u32,
}

pub struct ClassificationBatch {
    /// `[b, t]` u32
    pub ids: Tensor,
    /// `[b, t]` f32, 1 for tokens, 0 for padding
    pub mask: Tensor,
    /// `[b]` u32
    pub labels: Tensor,
    pub tokens: usize,
}

/// Tokenise `(text, label)` pairs, truncating to `max_length`; `source` names the data in errors.
pub fn encode_classification(
    tokenizer: &TextTokenizer,
    items: &[(String, usize)],
    max_length: usize,
    source: &str,
) -> Result<Vec<EncodedExample>> {
    items
        .iter()
        .enumerate()
        .map(|(i, (text, label))| {
            let mut ids = tokenizer.encode(text)?;
            if ids.is_empty() {
                return Err(Error::InvalidData(format!("{source} record {i}: the text tokenizes to nothing")));
            }
            ids.truncate(max_length);
            Ok(EncodedExample { ids, label: *label as u32 })
        })
        .collect()
}

/// Batches of example indices for one epoch: shuffled with `seed`, then grouped so that each
/// batch holds examples of similar length (less padding), and the batches shuffled again.
pub fn bucketed_batches(lengths: &[usize], batch_size: usize, seed: u64) -> Vec<Vec<usize>> {
    let order = seeded_permutation(lengths.len(), seed);
    // Sort within windows of 50 batches: near-random order overall, little padding inside.
    let window = batch_size * 50;
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for chunk in order.chunks(window) {
        let mut chunk = chunk.to_vec();
        chunk.sort_by_key(|&i| lengths[i]);
        batches.extend(chunk.chunks(batch_size).map(|c| c.to_vec()));
    }
    let batch_order = seeded_permutation(batches.len(), seed ^ 0x9e37_79b9_7f4a_7c15);
    batch_order.into_iter().map(|i| std::mem::take(&mut batches[i])).collect()
}

/// Pad the examples `indices` to their longest length with `pad`.
pub fn classification_batch(
    examples: &[EncodedExample],
    indices: &[usize],
    pad: u32,
    device: &Device,
) -> Result<ClassificationBatch> {
    let t = indices.iter().map(|&i| examples[i].ids.len()).max().unwrap_or(1);
    let b = indices.len();
    let mut ids = Vec::with_capacity(b * t);
    let mut mask = Vec::with_capacity(b * t);
    let mut tokens = 0;
    for &i in indices {
        let e = &examples[i].ids;
        tokens += e.len();
        ids.extend(e.iter().copied().chain(std::iter::repeat(pad)).take(t));
        mask.extend((0..t).map(|j| if j < e.len() { 1f32 } else { 0.0 }));
    }
    let labels: Vec<u32> = indices.iter().map(|&i| examples[i].label).collect();
    Ok(ClassificationBatch {
        ids: Tensor::from_vec(ids, (b, t), device)?,
        mask: Tensor::from_vec(mask, (b, t), device)?,
        labels: Tensor::from_vec(labels, b, device)?,
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_example_once_and_are_seeded() {
        let lengths: Vec<usize> = (0..103).map(|i| (i * 37) % 50 + 1).collect();
        let batches = bucketed_batches(&lengths, 8, 3);
        let mut all: Vec<usize> = batches.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
        assert_eq!(batches, bucketed_batches(&lengths, 8, 3));
        assert_ne!(batches, bucketed_batches(&lengths, 8, 4));
        // Sorting inside the window keeps each batch's lengths close.
        let spread: usize = batches
            .iter()
            .map(|b| b.iter().map(|&i| lengths[i]).max().unwrap() - b.iter().map(|&i| lengths[i]).min().unwrap())
            .sum();
        assert!(spread < 103 * 50 / 8 / 4, "batches are not bucketed by length (spread {spread})");
    }

    #[test]
    fn batches_pad_dynamically() {
        let ex = vec![EncodedExample { ids: vec![5, 6, 7], label: 1 }, EncodedExample { ids: vec![8], label: 0 }];
        let b = classification_batch(&ex, &[0, 1], 0, &Device::Cpu).unwrap();
        assert_eq!(b.ids.to_vec2::<u32>().unwrap(), vec![vec![5, 6, 7], vec![8, 0, 0]]);
        assert_eq!(b.mask.to_vec2::<f32>().unwrap(), vec![vec![1., 1., 1.], vec![1., 0., 0.]]);
        assert_eq!(b.labels.to_vec1::<u32>().unwrap(), vec![1, 0]);
        assert_eq!(b.tokens, 4);
    }
}
