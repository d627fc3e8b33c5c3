//! Seeded shuffling and the train/validation split used when no validation set is given.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::error::{Error, Result};

/// A permutation of `0..n` that depends only on `seed` (the same on every platform).
pub fn seeded_permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    order
}

/// Shuffle `items` with `seed` and hold out `fraction` of them (at least one) for validation.
pub fn train_validation_split<T>(items: Vec<T>, fraction: f64, seed: u64) -> Result<(Vec<T>, Vec<T>)> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::InvalidOption(format!("validation fraction must be between 0 and 1, got {fraction}")));
    }
    if items.len() < 2 {
        return Err(Error::InvalidData(format!(
            "{} record(s) cannot be split into training and validation sets; give at least 2",
            items.len()
        )));
    }
    let held = ((items.len() as f64 * fraction).round() as usize).clamp(1, items.len() - 1);
    let order = seeded_permutation(items.len(), seed);
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    let mut shuffled = order.into_iter().map(|i| slots[i].take().expect("a permutation visits each index once"));
    let validation: Vec<T> = shuffled.by_ref().take(held).collect();
    Ok((shuffled.collect(), validation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_seeded_disjoint_and_complete() {
        let (train, val) = train_validation_split((0..100).collect::<Vec<_>>(), 0.1, 7).unwrap();
        assert_eq!((train.len(), val.len()), (90, 10));
        let mut all: Vec<i32> = train.iter().chain(&val).copied().collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(train_validation_split((0..100).collect::<Vec<_>>(), 0.1, 7).unwrap().1, val);
        assert_ne!(train_validation_split((0..100).collect::<Vec<_>>(), 0.1, 8).unwrap().1, val);
        assert!(train_validation_split(vec![1], 0.5, 0).is_err());
        assert!(train_validation_split(vec![1, 2], 1.5, 0).is_err());
    }
}
